-- demo/deploy.lua: the deploy script of `make demo`. On issued and renew it
-- checks that the stored files hold what the event says, then writes one
-- line per certificate into demo/run/deployed/<name>.txt, which the demo
-- prints. Relative paths start in the directory of acmehook.toml, where
-- acmehook runs its scripts.
local acmehook = require("acmehook")

local function deployed(ev)
  local cert = assert(acmehook.x509.parse(assert(acmehook.files.read(ev.fullchain_path))))
  if cert.serial ~= ev.serial then
    error("fullchain.pem holds serial " .. cert.serial .. ", the event says " .. ev.serial)
  end
  if not acmehook.files.exists(ev.key_path) then
    error("no key at " .. ev.key_path)
  end
  local line = string.format("%s: %s for %s, serial %s, issued by %s, expires %s\n",
    ev.name, ev.cert_name, table.concat(ev.domains, " "), ev.serial,
    cert.issuer, os.date("!%Y-%m-%d %H:%M UTC", ev.not_after))
  assert(acmehook.files.write("demo/run/deployed/" .. ev.cert_name .. ".txt", line, {mode = "0644"}))
  acmehook.log.info("deployed", {cert = ev.cert_name, serial = ev.serial})
end

acmehook.on("issued", deployed)
acmehook.on("renew", deployed)

acmehook.on("failed", function(ev)
  local e = ev.error or {}
  acmehook.files.write("demo/run/deployed/" .. ev.cert_name .. ".failed.txt",
    string.format("failed: %s (%s: %s)\n", e.message or "?", e.problem_type or "-", e.problem_detail or "-"),
    {mode = "0644"})
end)
