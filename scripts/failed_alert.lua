-- failed_alert.lua: alert a chat channel when issuance or renewal fails.
-- The payload {"text": "..."} is accepted by Slack and Mattermost incoming
-- webhooks and by most chat bridges.
--
-- acmehook retries on its next run (or the daemon at its next check), with
-- a backoff; `acmehook explain NAME` shows the certificate's state.
--
-- Settings, in acmehook.toml under [lua.vars]:
--   alert_url  incoming-webhook URL (required)
local acmehook = require("acmehook")

local url = acmehook.vars.alert_url
if not url then
  error("failed_alert.lua: set vars.alert_url")
end

acmehook.on("failed", function(ev)
  local err = ev.error or {}
  local text = "acmehook could not obtain " .. ev.cert_name
    .. " (" .. table.concat(ev.domains, ", ") .. "): " .. (err.message or "unknown error")
  if err.problem_type then
    text = text .. " [" .. err.problem_type:gsub("^urn:ietf:params:acme:error:", "") .. "]"
  end
  -- A failed renewal still has a certificate in service: say how urgent it is.
  if ev.not_after then
    local days = math.floor((ev.not_after - os.time()) / 86400)
    text = text .. "; the certificate in service (serial " .. ev.serial .. ") expires "
      .. os.date("!%Y-%m-%d %H:%M UTC", ev.not_after) .. ", in " .. days .. " days"
  end
  if ev.test then
    text = "[test] " .. text
  end
  acmehook.log.error("certificate failure", {cert = ev.cert_name, problem = err.problem_type})

  local resp = assert(acmehook.http.request({
    method = "POST", url = url, timeout = 15,
    headers = {["Content-Type"] = "application/json"},
    body = assert(acmehook.json.encode({text = text})),
  }))
  if resp.status < 200 or resp.status > 299 then
    error("alert webhook answered " .. resp.status)
  end
end)
