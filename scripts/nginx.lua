-- nginx.lua: deploy a new certificate to nginx, test the configuration,
-- reload, and check that nginx serves the new certificate.
--
-- Settings (acmehook.vars, all optional):
--   nginx          nginx binary                         /usr/sbin/nginx
--   nginx_tls_dir  directory nginx reads certificates   /etc/nginx/tls
--   nginx_group    group allowed to read the key        (none: owner only)
--   probe_address  host:port nginx serves TLS on        127.0.0.1:443
--   probe_tries    probes, half a second apart          10
--
-- Writes <nginx_tls_dir>/<cert_name>.crt (full chain, 0644) and
-- <cert_name>.key (0640). If `nginx -t` rejects them, the previous files
-- are put back and the deploy fails, so acmehook retries it later.
local acmehook = require("acmehook")
local files, vars = acmehook.files, acmehook.vars

local nginx = vars.nginx or "/usr/sbin/nginx"
local dir = vars.nginx_tls_dir or "/etc/nginx/tls"
local group = vars.nginx_group
local probe_address = vars.probe_address or "127.0.0.1:443"
local probe_tries = tonumber(vars.probe_tries) or 10

-- put writes content to path, or removes path when content is nil.
local function put(path, content, mode)
  if content == nil then
    return assert(files.remove(path))
  end
  return assert(files.write(path, content, {mode = mode, group = group}))
end

local function trim(s)
  return (s:gsub("%s+$", ""))
end

local function deploy(ev)
  local crt = dir .. "/" .. ev.cert_name .. ".crt"
  local key = dir .. "/" .. ev.cert_name .. ".key"
  assert(files.mkdir(dir, {mode = "0755"}))
  local old_crt, old_key = files.read(crt), files.read(key) -- nil when absent

  assert(files.copy(ev.fullchain_path, crt, {mode = "0644"}))
  assert(files.copy(ev.key_path, key, {mode = "0640", group = group}))

  local test = assert(acmehook.exec({nginx, "-t"}, {timeout = 30}))
  if test.code ~= 0 then
    put(crt, old_crt, "0644")
    put(key, old_key, "0640")
    error("nginx -t rejected the new certificate (previous files restored): " .. trim(test.stderr))
  end
  local reload = assert(acmehook.exec({nginx, "-s", "reload"}, {timeout = 30}))
  if reload.code ~= 0 then
    error("nginx -s reload exited " .. reload.code .. ": " .. trim(reload.stderr))
  end

  local last
  for _ = 1, probe_tries do
    local served, err = acmehook.tls.probe(probe_address, ev.domains[1])
    if served and served.serial == ev.serial then
      acmehook.log.info("nginx serves the new certificate", {serial = ev.serial, address = probe_address})
      return
    end
    last = err or ("serial " .. served.serial)
    acmehook.sleep(0.5)
  end
  error("nginx at " .. probe_address .. " does not serve serial " .. ev.serial .. " after reload: " .. last)
end

acmehook.on("issued", deploy)
acmehook.on("renew", deploy)
