-- Runtime spec: TLS to Traffic Ops (and InfluxDB) over real TLS endpoints:
-- stunnel4 terminating TLS in front of the simulator's Traffic Ops and of
-- influxd, with a CA and certificates made here by openssl. Verified with the
-- CA, refused without it, refused for a wrong host name, accepted with
-- insecure (warning logged at start and at reload), mutual TLS with a client
-- certificate; a config file readable by others that holds a secret warns.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

describe("TLS to Traffic Ops and InfluxDB #asan", function()
  local tstats = stack.bin("tstats")
  local tmp, influx, sim, sim_info
  local ca, srv_cert, srv_key, cli_cert, cli_key

  local function sh(cmd)
    local rc, out, err = stack.run(cmd, { timeout = 60 })
    assert(rc == 0, cmd .. ": " .. err .. out)
    return out
  end

  -- stunnel in front of 127.0.0.1:port; opts.client_ca demands a client certificate
  local function tls_proxy(port, opts)
    opts = opts or {}
    local p = stack.free_port()
    local conf = tmp .. "/stunnel-" .. p .. ".conf"
    local lines = { "foreground = yes", "pid =", "debug = 4", "[svc]", "accept = 127.0.0.1:" .. p,
      "connect = 127.0.0.1:" .. port, "cert = " .. srv_cert, "key = " .. srv_key }
    if opts.client_ca then
      lines[#lines + 1] = "CAfile = " .. opts.client_ca
      lines[#lines + 1] = "verifyChain = yes"
      lines[#lines + 1] = "requireCert = yes"
    end
    stack.write_file(conf, table.concat(lines, "\n") .. "\n")
    local h = stack.spawn("exec /usr/bin/stunnel4 " .. q(conf), tmp .. "/stunnel-" .. p .. ".log")
    assert(stack.wait_until(function()
      local rc = stack.run("bash -c " .. q("exec 3<>/dev/tcp/127.0.0.1/" .. p))
      return rc == 0
    end, 10, 0.1), "stunnel did not listen: " .. tostring(stack.read_file(tmp .. "/stunnel-" .. p .. ".log")))
    return p, h
  end

  setup(function()
    tmp = stack.tmpdir()
    ca, srv_cert, srv_key = tmp .. "/ca.pem", tmp .. "/server.pem", tmp .. "/server.key"
    cli_cert, cli_key = tmp .. "/client.pem", tmp .. "/client.key"
    -- a CA, a server certificate for the name "localhost" only (so 127.0.0.1 is a wrong host
    -- name), and a client certificate from the same CA
    sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 -subj /CN=tstats-test-ca"
      .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign")
      :format(q(tmp .. "/ca.key"), q(ca)))
    for _, c in ipairs({ { srv_cert, srv_key, "localhost", "subjectAltName=DNS:localhost" },
      { cli_cert, cli_key, "tstats-client", "extendedKeyUsage=clientAuth" } }) do
      local csr, ext = c[1] .. ".csr", c[1] .. ".ext"
      stack.write_file(ext, c[4] .. "\n")
      sh(("openssl req -newkey rsa:2048 -nodes -keyout %s -out %s -subj /CN=%s"):format(q(c[2]), q(csr), c[3]))
      sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -out %s -days 1 -extfile %s")
        :format(q(csr), q(ca), q(tmp .. "/ca.key"), q(c[1]), q(ext)))
    end
    local dir = tmp .. "/capath"
    sh("mkdir -p " .. q(dir) .. " && cp " .. q(ca) .. " " .. q(dir .. "/ca.pem") .. " && openssl rehash " .. q(dir))
    influx = stack.influxd_start_atc()
    sim = stack.sim_start("--cdns 1 --caches 3 --ds 2")
    sim_info = sim.info
  end)
  teardown(function()
    if sim then sim:stop() end
    stack.cleanup_all()
  end)

  local n = 0
  local function config(to_url, to_extra, influx_url, influx_extra)
    n = n + 1
    local path = tmp .. "/config" .. n .. ".lua"
    stack.write_file(path, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = env("TO_PASSWORD"), timeout = 5, %s },
  influxdb = { urls = { %q }, %s },
  polling_interval = 1, publishing_interval = 1,
  state_dir = %q,
  summary = { enabled = false },
}
]]):format(to_url, to_extra or "", influx_url or influx.url, influx_extra or "", tmp .. "/state" .. n))
    os.execute("chmod 600 " .. q(path))
    return path
  end
  local function once(path)
    return stack.run(q(tstats) .. " --config " .. q(path) .. " once", { timeout = 60, env = { TO_PASSWORD = "twelve12" } })
  end


  describe("Traffic Ops", function()
    local p
    setup(function() p = tls_proxy(tonumber(sim_info.to_url:match(":(%d+)$"))) end)

    it("is verified with the CA file", function()
      local rc, _, err = once(config("https://localhost:" .. p, ("ca_file = %q"):format(ca)))
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("Sent %d+ stats for cache_stats"), err)
    end)

    it("is verified with a CA directory (ca_path)", function()
      local dir = tmp .. "/capath"
      local rc, _, err = once(config("https://localhost:" .. p, ("ca_path = %q"):format(dir)))
      assert.are.equal(0, rc, err)
    end)

    it("is refused without the CA", function()
      local rc, _, err = once(config("https://localhost:" .. p))
      assert.are_not.equal(0, rc)
      assert.truthy(err:lower():find("certificate"), err)
    end)

    it("is refused for a wrong host name even with the CA", function()
      local rc, _, err = once(config("https://127.0.0.1:" .. p, ("ca_file = %q"):format(ca)))
      assert.are_not.equal(0, rc)
      assert.truthy(err:find("no alternative certificate subject name matches target host name '127.0.0.1'", 1, true), err)
    end)

    it("is accepted with insecure = true, with a warning at start and at every reload", function()
      local rc, _, err = once(config("https://127.0.0.1:" .. p, "insecure = true"))
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("traffic_ops.insecure = true: TLS certificates of Traffic Ops are NOT verified", 1, true), err)
      local cfg = config("https://127.0.0.1:" .. p, "insecure = true")
      local log = tmp .. "/run.log"
      local h = stack.spawn(q(tstats) .. " --config " .. q(cfg) .. " run", log, { env = { TO_PASSWORD = "twelve12" } })
      local function warnings()
        local s = stack.read_file(log) or ""
        local c = 0
        for _ in s:gmatch("traffic_ops.insecure = true") do c = c + 1 end
        return c
      end
      assert.truthy(stack.wait_until(function() return warnings() >= 1 end, 20, 0.1))
      assert.truthy(stack.wait_until(function() return (stack.read_file(log) or ""):find("plan: ", 1, true) end, 20, 0.1))
      h:kill("HUP")
      assert.truthy(stack.wait_until(function() return warnings() >= 2 end, 20, 0.1), stack.read_file(log))
      h:kill("HUP")
      assert.truthy(stack.wait_until(function() return warnings() >= 3 end, 20, 0.1), stack.read_file(log))
      h:stop()
    end)

    it("presents a client certificate when the server demands one", function()
      local mp = tls_proxy(tonumber(sim_info.to_url:match(":(%d+)$")), { client_ca = ca })
      local rc, _, err = once(config("https://localhost:" .. mp, ("ca_file = %q"):format(ca)))
      assert.are_not.equal(0, rc, "refused without a client certificate")
      rc, _, err = once(config("https://localhost:" .. mp, ("ca_file = %q, client_cert = %q, client_key = %q"):format(ca,
        cli_cert, cli_key)))
      assert.are.equal(0, rc, err)
    end)
  end)

  describe("InfluxDB", function()
    local p, to
    setup(function()
      p = tls_proxy(influx.port)
      to = sim_info.to_url
    end)
    local function points()
      local res = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"."bandwidth"', "cache_stats")
      local s = res and res.results[1].series
      return s and s[1].values[1][2] or 0
    end

    it("is verified with the CA file (writes and queries)", function()
      stack.influx_drop_series(influx.url)
      assert.are.equal(0, points())
      local rc, _, err = once(config(to, nil, "https://localhost:" .. p, ("ca_file = %q"):format(ca)))
      assert.are.equal(0, rc, err)
      assert.truthy(points() > 0)
      -- the Lua API's queries go the same way
      local script = tmp .. "/q.lua"
      stack.write_file(script, 'local r = assert(tstats.influx.query("SHOW DATABASES")); print("series", #r)')
      local cfg = config(to, nil, "https://localhost:" .. p, ("ca_path = %q"):format(tmp .. "/capath"))
      local src, out
      rc, out, err = stack.run(q(tstats) .. " --config " .. q(cfg) .. " script " .. q(script), { timeout = 60 })
      src = out .. err
      assert.are.equal(0, rc, src)
      assert.truthy(src:find("series\t1", 1, true), src)
    end)

    it("is refused without the CA and for a wrong host name", function()
      local rc, _, err = once(config(to, nil, "https://localhost:" .. p))
      assert.are_not.equal(0, rc)
      assert.truthy(err:lower():find("certificate"), err)
      rc, _, err = once(config(to, nil, "https://127.0.0.1:" .. p, ("ca_file = %q"):format(ca)))
      assert.are_not.equal(0, rc)
      assert.truthy(err:find("no alternative certificate subject name matches target host name '127.0.0.1'", 1, true), err)
    end)

    it("is accepted with insecure = true, with a warning at start and at every reload", function()
      local cfg = config(to, nil, "https://127.0.0.1:" .. p, "insecure = true")
      local rc, _, err = once(cfg)
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("influxdb.insecure = true: TLS certificates of InfluxDB are NOT verified", 1, true), err)
      local log = tmp .. "/run-influx.log"
      local h = stack.spawn(q(tstats) .. " --config " .. q(cfg) .. " run", log, { env = { TO_PASSWORD = "twelve12" } })
      local function warnings()
        local c = 0
        for _ in (stack.read_file(log) or ""):gmatch("influxdb.insecure = true") do c = c + 1 end
        return c
      end
      assert.truthy(stack.wait_until(function() return warnings() >= 1 end, 20, 0.1))
      assert.truthy(stack.wait_until(function() return (stack.read_file(log) or ""):find("plan: ", 1, true) end, 20, 0.1))
      h:kill("HUP")
      assert.truthy(stack.wait_until(function() return warnings() >= 2 end, 20, 0.1), stack.read_file(log))
      h:stop()
    end)

    it("presents a client certificate when the server demands one", function()
      local mp = tls_proxy(influx.port, { client_ca = ca })
      local rc, _, err = once(config(to, nil, "https://localhost:" .. mp, ("ca_file = %q"):format(ca)))
      assert.are_not.equal(0, rc, "refused without a client certificate")
      rc, _, err = once(config(to, nil, "https://localhost:" .. mp, ("ca_file = %q, client_cert = %q, client_key = %q")
        :format(ca, cli_cert, cli_key)))
      assert.are.equal(0, rc, err)
    end)

    it("lets tstats sync verify both ends with their own CA files", function()
      local rc, out, err = stack.run(q(tstats) .. " sync --source https://localhost:" .. p .. " --target "
        .. q(influx.url) .. " --database daily_stats --state-dir " .. q(tmp .. "/sync-state"), { timeout = 60 })
      assert.are.equal(1, rc)
      assert.truthy(err:lower():find("certificate"), err)
      rc, out, err = stack.run(q(tstats) .. " sync --source https://localhost:" .. p .. " --target "
        .. q(influx.url) .. " --database daily_stats --state-dir " .. q(tmp .. "/sync-state"),
        { timeout = 60, env = { SYNC_SOURCE_CA_FILE = ca } })
      -- the same server on both ends under two names: nothing to copy, and it does not fail
      assert.are.equal(0, rc, err .. out)
    end)
  end)

  it("warns when a config file readable by others holds a secret in clear", function()
    local path = tmp .. "/clear.lua"
    stack.write_file(path, ([[return { traffic_ops = { url = "http://127.0.0.1:9", password = "in-clear-pw" },
      influxdb = { urls = { %q } }, summary = { sinks = {} } }]]):format(influx.url))
    os.execute("chmod 644 " .. q(path))
    local rc, out, err = stack.run(q(tstats) .. " check --config " .. q(path))
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("holds traffic_ops.password in clear and is readable by others (mode 644)", 1, true), err)
    assert.falsy((out .. err):find("in-clear-pw", 1, true))
    os.execute("chmod 600 " .. q(path))
    rc, _, err = stack.run(q(tstats) .. " check --config " .. q(path))
    assert.are.equal(0, rc)
    assert.falsy(err:find("readable by others", 1, true), err)
    -- a secret from env() is not in the file: no warning even when the file is world-readable
    stack.write_file(path, ([[return { traffic_ops = { url = "http://127.0.0.1:9", password = env("TO_PASSWORD") },
      influxdb = { urls = { %q } }, summary = { sinks = {} } }]]):format(influx.url))
    os.execute("chmod 644 " .. q(path))
    rc, _, err = stack.run(q(tstats) .. " check --config " .. q(path), { env = { TO_PASSWORD = "from-env" } })
    assert.are.equal(0, rc)
    assert.falsy(err:find("readable by others", 1, true), err)
  end)
end)
