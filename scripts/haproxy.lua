-- haproxy.lua: deploy a certificate to HAProxy as one combined PEM (full
-- chain followed by the private key), then reload HAProxy.
--
-- Settings (acmehook.vars, all optional):
--   haproxy_cert_dir  directory of haproxy's crt lines   /etc/haproxy/certs
--   haproxy_reload    reload command, split on spaces     systemctl reload haproxy
--                     (run directly, not through a shell)
--
-- Writes <haproxy_cert_dir>/<cert_name>.pem with mode 0600.
local acmehook = require("acmehook")
local files, vars = acmehook.files, acmehook.vars

local dir = vars.haproxy_cert_dir or "/etc/haproxy/certs"
local reload = {}
for word in (vars.haproxy_reload or "systemctl reload haproxy"):gmatch("%S+") do
  reload[#reload + 1] = word
end

local function deploy(ev)
  local key = assert(files.read(ev.key_path))
  local fullchain = ev.fullchain_pem
  if fullchain:sub(-1) ~= "\n" then
    fullchain = fullchain .. "\n"
  end
  assert(files.mkdir(dir, {mode = "0755"}))
  local pem = dir .. "/" .. ev.cert_name .. ".pem"
  assert(files.write(pem, fullchain .. key, {mode = "0600"}))

  local r = assert(acmehook.exec(reload, {timeout = 60}))
  if r.code ~= 0 then
    error(table.concat(reload, " ") .. " exited " .. r.code .. ": " .. (r.stderr:gsub("%s+$", "")))
  end
  acmehook.log.info("haproxy certificate deployed", {path = pem, serial = ev.serial})
end

acmehook.on("issued", deploy)
acmehook.on("renew", deploy)
