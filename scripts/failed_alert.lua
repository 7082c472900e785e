-- failed_alert.lua: alert a chat channel when issuance or renewal fails,
-- and when a held renewal would let the certificate in service expire.
-- The payload {"text": "..."} is accepted by Slack and Mattermost incoming
-- webhooks and by most chat bridges.
--
-- acmehook retries on its next run (or the daemon at its next check), with
-- a backoff; `acmehook explain NAME` shows the certificate's state. A
-- failure the CA says needs a person (userActionRequired) names the URL to
-- visit. renewal-held alerts only when the hold ends after the certificate
-- in service expires (`acmehook issue NAME` overrides the hold).
--
-- A dry run's failure (run --dry-run) alerts nobody: the operator running
-- it sees the error; the script only logs what it would have sent.
--
-- Settings, in acmehook.toml under [lua.vars]:
--   alert_url  incoming-webhook URL (required)
local acmehook = require("acmehook")

local url = acmehook.vars.alert_url
if not url then
  error("failed_alert.lua: set vars.alert_url")
end

local function utc(unix)
  return os.date("!%Y-%m-%d %H:%M UTC", unix)
end

-- post sends text to the channel, marked when the event is a test.
local function post(ev, text)
  if ev.test then
    text = "[test] " .. text
  end
  if ev.dry_run then
    acmehook.log.warn("dry run: alert not sent: " .. text, {cert = ev.cert_name})
    return
  end
  local resp = assert(acmehook.http.request({
    method = "POST", url = url, timeout = 15,
    headers = {["Content-Type"] = "application/json"},
    body = assert(acmehook.json.encode({text = text})),
  }))
  if resp.status < 200 or resp.status > 299 then
    error("alert webhook answered " .. resp.status)
  end
end

acmehook.on("failed", function(ev)
  local err = ev.error or {}
  local text = "acmehook could not obtain " .. ev.cert_name
    .. " (" .. table.concat(ev.domains, ", ") .. "): " .. (err.message or "unknown error")
  if err.problem_type then
    text = text .. " [" .. err.problem_type:gsub("^urn:ietf:params:acme:error:", "") .. "]"
  end
  if err.problem_type == "urn:ietf:params:acme:error:userActionRequired" and err.problem_instance then
    text = text .. "; the CA needs a person to act first: " .. err.problem_instance
  end
  -- A failed renewal still has a certificate in service: say how urgent it is.
  if ev.not_after then
    local days = math.floor((ev.not_after - os.time()) / 86400)
    text = text .. "; the certificate in service (serial " .. ev.serial .. ") expires "
      .. utc(ev.not_after) .. ", in " .. days .. " days"
  end
  acmehook.log.error("certificate failure", {cert = ev.cert_name, problem = err.problem_type})
  post(ev, text)
end)

acmehook.on("renewal-held", function(ev)
  if not ev.expires_before_hold_ends then
    return
  end
  acmehook.log.error("renewal held past expiry", {cert = ev.cert_name, held_until = utc(ev.held_until)})
  post(ev, "acmehook holds the renewal of " .. ev.cert_name .. " (" .. table.concat(ev.domains, ", ") .. ") until "
    .. utc(ev.held_until) .. " (" .. ev.hold_reason .. "), but the certificate in service (serial " .. ev.serial
    .. ") expires " .. utc(ev.not_after) .. ": fix the cause, then `acmehook issue " .. ev.cert_name .. "`")
end)
