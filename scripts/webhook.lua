-- webhook.lua: POST a JSON notification when a certificate is issued,
-- renewed or revoked.
--
-- Settings, in acmehook.toml under [lua.vars]:
--   webhook_url    endpoint to POST to (required)
--   webhook_token  sent as "Authorization: Bearer <token>" (optional; keep
--                  it out of the file: { secret_env = "WEBHOOK_TOKEN" })
--
-- Body: {"event", "cert_name", "domains", "serial", "issuer", "not_before",
-- "not_after" (RFC 3339 UTC), "previous_serial" (renew),
-- "revocation_reason" (revoke), "test" (synthetic events)}.
-- A dry run (run --dry-run) notifies nobody: the certificate it got is
-- thrown away, so it only logs what it would have sent.
-- A non-2xx answer fails the event: for issued and renew, acmehook keeps the
-- certificate and retries the deploy (every script of the certificate) on
-- its next run; a failed revoke notification is recorded.
local acmehook = require("acmehook")
local vars = acmehook.vars

local url = vars.webhook_url
if not url then
  error("webhook.lua: set vars.webhook_url")
end

local function rfc3339(unix)
  return unix and os.date("!%Y-%m-%dT%H:%M:%SZ", unix)
end

local function notify(ev)
  local headers = {["Content-Type"] = "application/json"}
  if vars.webhook_token then
    headers["Authorization"] = "Bearer " .. vars.webhook_token
  end
  local body = assert(acmehook.json.encode({
    event = ev.name,
    cert_name = ev.cert_name,
    domains = ev.domains,
    serial = ev.serial,
    issuer = ev.issuer,
    not_before = rfc3339(ev.not_before),
    not_after = rfc3339(ev.not_after),
    previous_serial = ev.previous_serial,
    revocation_reason = ev.revocation_reason,
    test = ev.test,
  }))
  if ev.dry_run then
    acmehook.log.info("dry run: webhook not sent", {url = url, event = ev.name, cert = ev.cert_name})
    return
  end
  local resp = assert(acmehook.http.request({
    method = "POST", url = url, headers = headers, body = body, timeout = 15,
  }))
  if resp.status < 200 or resp.status > 299 then
    error("webhook answered " .. resp.status .. ": " .. resp.body:sub(1, 200))
  end
end

acmehook.on("issued", notify)
acmehook.on("renew", notify)
acmehook.on("revoke", notify)
