-- haproxy.lua: deploy certificates to HAProxy as combined PEMs (full
-- chain followed by the private key), then reload HAProxy once per run.
--
-- For certificate NAME it writes haproxy_cert_dir/NAME.pem, mode 0600, which
-- a bind line loads with `crt /etc/haproxy/certs/` (the whole directory) or
-- `crt /etc/haproxy/certs/NAME.pem`, on issued and renew. On run-end, if any
-- certificate was deployed in the run, it reloads HAProxy once. A failing
-- reload fails the deploy: acmehook keeps the certificates and deploys them
-- again on its next run. A dry run changes nothing.
--
-- Settings, in acmehook.toml under [lua.vars] (all optional):
--   haproxy_cert_dir  directory of the combined PEMs       /etc/haproxy/certs
--   haproxy_reload    reload command, split on spaces     systemctl reload haproxy
--                     (run directly, not through a shell)
--   test_deploy       "true": `acmehook script test` really deploys its
--                     throwaway certificate and reloads on run-end (by
--                     default a test event changes nothing: it checks that
--                     haproxy_cert_dir exists and is writable)
local acmehook = require("acmehook")
local files, vars = acmehook.files, acmehook.vars

local dir = vars.haproxy_cert_dir or "/etc/haproxy/certs"
local reload = {}
for word in (vars.haproxy_reload or "systemctl reload haproxy"):gmatch("%S+") do
  reload[#reload + 1] = word
end

local function deploy(ev)
  if ev.dry_run or (ev.test and vars.test_deploy ~= "true") then
    if not files.exists(dir) then
      error(dir .. " does not exist: create it, or set haproxy_cert_dir")
    end
    local marker = dir .. "/.acmehook-write-test"
    assert(files.write(marker, "", {mode = "0600"}))
    assert(files.remove(marker))
    local what = ev.dry_run and "dry run" or "test event (set test_deploy = \"true\" to deploy)"
    acmehook.log.info(what .. ": " .. dir .. " is writable, nothing deployed")
    return
  end

  assert(files.mkdir(dir, {mode = "0755"}))
  local key = assert(files.read(ev.key_path))
  local fullchain = ev.fullchain_pem
  if fullchain:sub(-1) ~= "\n" then
    fullchain = fullchain .. "\n"
  end
  local pem = dir .. "/" .. ev.cert_name .. ".pem"
  assert(files.write(pem, fullchain .. key, {mode = "0600"}))
  acmehook.log.info("haproxy certificate in place; haproxy reloads at the end of the run", {path = pem, serial = ev.serial})
end

-- run_reload reloads haproxy once for every certificate deployed in the run.
local function run_reload(ev)
  if ev.dry_run or #ev.deployed == 0 or (ev.test and vars.test_deploy ~= "true") then
    return
  end
  local r = assert(acmehook.exec(reload, {timeout = 60}))
  if r.code ~= 0 then
    error(table.concat(reload, " ") .. " exited " .. r.code .. ": " .. (r.stderr:gsub("%s+$", "")))
  end
  acmehook.log.info("haproxy reloaded", {certificates = table.concat(ev.deployed, ", ")})
end

acmehook.on("issued", deploy)
acmehook.on("renew", deploy)
acmehook.on("run-end", run_reload)
