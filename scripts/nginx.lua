-- nginx.lua: deploy new certificates to nginx, test the configuration,
-- reload once per run, and check that nginx serves the new certificates.
--
-- For certificate NAME it writes, in nginx_tls_dir:
--   NAME.crt  certificate and chain (fullchain), mode 0644
--   NAME.key  private key, mode 0600 (0640 and group nginx_group if set)
-- so the server block only needs:
--   ssl_certificate     /etc/nginx/tls/NAME.crt;
--   ssl_certificate_key /etc/nginx/tls/NAME.key;
-- nginx's master process reads them as root, so no owner change is needed.
--
-- On issued and renew it puts the files in place and runs `nginx -t`; if
-- nginx rejects them, the previous ones are put back and the deploy fails:
-- acmehook keeps the certificate and retries the deploy on its next run.
-- On run-end, if any certificate was deployed in the run, it reloads nginx
-- once (20 certificates renewed in one run: one reload) and checks that
-- nginx serves each new certificate. If the reload or a check fails,
-- acmehook marks those deploys pending and the next run does them again.
-- A dry run (acmehook run --dry-run) changes nothing: it checks what a
-- test event checks.
--
-- Settings, in acmehook.toml under [lua.vars] (all optional):
--   nginx             nginx binary                          /usr/sbin/nginx
--   nginx_tls_dir     directory of the .crt and .key files   /etc/nginx/tls
--   nginx_group       group that may read the key            (none)
--   probe_address     host:port where nginx serves TLS       127.0.0.1:443
--   probe_servername  name sent as SNI when probing          first non-wildcard domain
--   probe_tries       probes, half a second apart            10
--   test_deploy       "true": `acmehook script test` really deploys its
--                     throwaway certificate (issued, renew) and reloads
--                     (run-end). By default a test event changes nothing:
--                     it checks that nginx_tls_dir exists and is writable,
--                     that `nginx -t` passes and that the probe reaches
--                     nginx
local acmehook = require("acmehook")
local files, vars = acmehook.files, acmehook.vars

local nginx = vars.nginx or "/usr/sbin/nginx"
local dir = vars.nginx_tls_dir or "/etc/nginx/tls"
local group = vars.nginx_group
local key_mode = group and "0640" or "0600"
local probe_address = vars.probe_address or "127.0.0.1:443"
local probe_tries = tonumber(vars.probe_tries) or 10

local function trim(s)
  return (s:gsub("%s+$", ""))
end

-- run_nginx runs nginx with args; unless it exits 0 it returns nil and
-- nginx's own message.
local function run_nginx(...)
  local r = assert(acmehook.exec({nginx, ...}, {timeout = 30}))
  if r.code ~= 0 then
    local msg = "nginx " .. table.concat({...}, " ") .. " exited " .. r.code
    if trim(r.stderr) ~= "" then
      msg = msg .. ": " .. trim(r.stderr)
    end
    return nil, msg
  end
  return true
end

-- put writes content to path, or removes path when content is nil (the
-- file did not exist before).
local function put(path, content, mode, grp)
  if content == nil then
    return assert(files.remove(path))
  end
  return assert(files.write(path, content, {mode = mode, group = grp}))
end

-- probe_name is the SNI for the probe: a wildcard is not a host name.
local function probe_name(ev)
  if vars.probe_servername then
    return vars.probe_servername
  end
  for _, d in ipairs(ev.domains) do
    if not d:find("^%*%.") then
      return d
    end
  end
  return "acmehook-probe" .. ev.domains[1]:sub(2) -- *.example.com -> acmehook-probe.example.com
end

-- dry_run is what a dry run does, and a test event unless test_deploy is
-- set: everything that can be checked without replacing the live
-- certificate.
local function dry_run(ev)
  if not files.exists(dir) then
    error(dir .. " does not exist: create it, or set nginx_tls_dir")
  end
  local marker = dir .. "/.acmehook-write-test"
  assert(files.write(marker, "", {mode = "0600", group = group}))
  assert(files.remove(marker))
  assert(run_nginx("-t"))
  local served, err = acmehook.tls.probe(probe_address, probe_name(ev))
  if not served then
    error("cannot probe nginx at " .. probe_address .. ": " .. err)
  end
  local what = ev.dry_run and "dry run" or "test event (set test_deploy = \"true\" to deploy)"
  acmehook.log.info(what .. ": checked, nothing deployed",
    {dir = dir, address = probe_address, serving = served.serial, not_after = os.date("!%Y-%m-%d", served.not_after)})
end

-- deploy puts the new files of ev's certificate in place and tests the
-- configuration with them; the reload waits for run-end.
local function deploy(ev)
  if ev.dry_run or (ev.test and vars.test_deploy ~= "true") then
    return dry_run(ev)
  end
  local crt = dir .. "/" .. ev.cert_name .. ".crt"
  local key = dir .. "/" .. ev.cert_name .. ".key"
  assert(files.mkdir(dir, {mode = "0755"}))
  local old_crt, old_key = files.read(crt), files.read(key) -- nil when absent

  -- 1. Copy (each file is replaced atomically).
  assert(files.copy(ev.fullchain_path, crt, {mode = "0644"}))
  assert(files.copy(ev.key_path, key, {mode = key_mode, group = group}))

  -- 2. Test the configuration with the new files; put the old ones back if
  --    nginx rejects them, so a later restart still works.
  local ok, err = run_nginx("-t")
  if not ok then
    put(crt, old_crt, "0644")
    put(key, old_key, key_mode, group)
    error("the new certificate was rejected (previous files restored): " .. err)
  end
  acmehook.log.info("certificate in place; nginx reloads at the end of the run", {crt = crt, serial = ev.serial})
end

-- serves reports whether nginx serves serial for c (a run-end
-- certificate), probing until it does; else nil and what it serves.
local function serves(c)
  local name, last = probe_name(c), nil
  for _ = 1, probe_tries do
    local served, perr = acmehook.tls.probe(probe_address, name)
    if served and served.serial == c.serial then
      return true
    end
    last = perr or ("it serves serial " .. served.serial)
    acmehook.sleep(0.5)
  end
  return nil, name .. ": " .. last
end

-- reload reloads nginx once for every certificate deployed in the run and
-- checks that each is served.
local function reload(ev)
  if ev.dry_run then
    acmehook.log.info("dry run: nginx not reloaded")
    return
  end
  if #ev.deployed == 0 then
    return
  end
  if ev.test then
    if vars.test_deploy == "true" then
      assert(run_nginx("-s", "reload"))
    else
      assert(run_nginx("-t"))
    end
    local served, err = acmehook.tls.probe(probe_address, probe_name(ev.certificates[1]))
    if not served then
      error("cannot probe nginx at " .. probe_address .. ": " .. err)
    end
    acmehook.log.info("test event: checked (set test_deploy = \"true\" to reload)", {address = probe_address, serving = served.serial})
    return
  end

  -- 3. Reload: nginx starts new workers with every new certificate.
  assert(run_nginx("-s", "reload"))

  -- 4. Check what nginx actually serves; the reload takes a moment.
  local wrong = {}
  for _, c in ipairs(ev.certificates) do
    if c.deployed then
      local ok, err = serves(c)
      if ok then
        acmehook.log.info("nginx serves the new certificate", {cert = c.cert_name, serial = c.serial, address = probe_address})
      else
        wrong[#wrong + 1] = err
      end
    end
  end
  if #wrong > 0 then
    error("nginx at " .. probe_address .. " does not serve the new certificate after reload: " .. table.concat(wrong, "; "))
  end
end

acmehook.on("issued", deploy)
acmehook.on("renew", deploy)
acmehook.on("run-end", reload)
