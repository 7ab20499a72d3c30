-- Runtime spec: the tstats binary's command line (--help, --version, check,
-- typo'd keys), `setup-influx` creating ATC's exact schema on a real influxd,
-- and `tstats script` using the Lua API against it.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

describe("tstats command line #asan", function()
  local tstats = stack.bin("tstats")
  local influx
  local tmp

  setup(function()
    influx = stack.influxd_start()
    tmp = stack.tmpdir()
  end)
  teardown(function() stack.cleanup_all() end)

  local function config(body)
    local path = tmp .. "/config-" .. tostring(math.random(1e9)) .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(body)
    f:close()
    return path
  end

  it("prints help and version", function()
    local rc, out = stack.run(tstats .. " --help")
    assert.are.equal(0, rc)
    assert.truthy(out:find("tstats [--config FILE]", 1, true))
    for _, cmd in ipairs({ "run", "once", "poll", "check", "setup-influx", "rollup", "backfill-cq", "script" }) do
      assert.truthy(out:find(cmd, 1, true), cmd)
    end
    rc, out = stack.run(tstats .. " --version")
    assert.are.equal(0, rc)
    assert.truthy(out:match("^tstats %d+%.%d+%.%d+"))
  end)

  it("check validates the embedded default and masks secrets", function()
    local rc, out = stack.run(tstats .. " check", { env = { TO_PASSWORD = "hunter2-secret" } })
    assert.are.equal(0, rc)
    assert.truthy(out:find("is valid", 1, true))
    assert.truthy(out:find('traffic_ops.password%s+= "%*%*%*%*"'))
    assert.falsy(out:find("hunter2", 1, true))
  end)

  it("check refuses a typo'd key, naming it and the file", function()
    local path = config([[return { traffic_ops = { url = "http://to" }, influxdb = { urls = { "http://i" } }, publishing_intervall = 5 }]])
    local rc, out, err = stack.run(tstats .. " check --config " .. path)
    assert.are_not.equal(0, rc)
    assert.truthy(err:find(path, 1, true), err)
    assert.truthy(err:find("'publishing_intervall' is not a known option (did you mean 'publishing_interval'?)", 1, true), err)
    assert.falsy(out:find("is valid", 1, true))
  end)

  it("check refuses a wrong type and a missing required value", function()
    local path = config([[return { traffic_ops = { url = "http://to", timeout = "ten" } }]])
    local rc, _, err = stack.run(tstats .. " --config " .. path .. " check")
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("'traffic_ops.timeout' must be a number", 1, true), err)
    assert.truthy(err:find("'influxdb.urls' is required", 1, true), err)
  end)

  it("refuses to run on a bad config instead of starting", function()
    local path = config([[return { nonsense = true }]])
    local rc, _, err = stack.run(tstats .. " --config " .. path .. " once", { timeout = 20 })
    assert.are.equal(2, rc)
    assert.truthy(err:find("'nonsense' is not a known option", 1, true))
  end)

  it("setup-influx creates ATC's databases, retention policies and continuous queries", function()
    local rc, _, err = stack.run(tstats .. " setup-influx", { env = { TSTATS_INFLUX_URL = influx.url } })
    assert.are.equal(0, rc, err)
    local dbs = stack.influx_rows(stack.influx_query(influx.url, "SHOW DATABASES"))
    local names = {}
    for _, r in ipairs(dbs) do names[r.name] = true end
    assert.truthy(names.cache_stats and names.deliveryservice_stats and names.daily_stats)
    local rps = stack.influx_rows(stack.influx_query(influx.url, "SHOW RETENTION POLICIES ON cache_stats"))
    local got = {}
    for _, r in ipairs(rps) do got[r.name] = { r.duration, r.default } end
    assert.are.same({ "26h0m0s", true }, got.daily)
    assert.are.same({ "720h0m0s", false }, got.monthly)
    assert.are.same({ "0s", false }, got.indefinite)
    -- every CQ of the fixture exists with the same name
    local schema = cjson.decode(stack.read_file(stack.root() .. "/spec/fixtures/influxdb/create_ts_databases_schema.json"))
    local decoded = stack.influx_query(influx.url, "SHOW CONTINUOUS QUERIES")
    local cqs = {}
    for _, s in ipairs(decoded.results[1].series) do
      for _, v in ipairs(s.values or {}) do cqs[s.name .. "/" .. v[1]] = v[2] end
    end
    local n = 0
    for db, d in pairs(schema.databases) do
      for _, cq in ipairs(d.continuous_queries or {}) do
        n = n + 1
        assert.truthy(cqs[db .. "/" .. cq.name], db .. "/" .. cq.name)
      end
    end
    assert.are.equal(18, n)
    -- idempotent: a second run is fine
    rc = stack.run(tstats .. " setup-influx", { env = { TSTATS_INFLUX_URL = influx.url } })
    assert.are.equal(0, rc)
  end)

  it("runs a one-off script with arguments, the Lua API and an exit code", function()
    local script = config([[
      local n = assert(tstats.influx.write{ db = "cache_stats", rp = "daily", precision = "ms", sync = true, points = {
        { measurement = "bandwidth", tags = { hostname = "edge one", cdn = "cdn=1" }, fields = { value = 1523.25 }, time = 1000 * (os.time() - 60) },
      } })
      local rows = assert(tstats.influx.rows('SELECT value, hostname, cdn FROM "daily"."bandwidth"', { db = "cache_stats" }))
      print(n, #rows, rows[1].hostname, rows[1].cdn, rows[1].value, arg[1], arg[2])
      -- queued (async) writes are flushed before the process exits
      tstats.influx.write{ db = "cache_stats", rp = "daily", points = {
        { measurement = "queued", fields = { value = 1.0 }, time = 1000 * (os.time() - 30) } } }
      return 3
    ]])
    local rc, out, err = stack.run(tstats .. " script " .. script .. " a1 'b 2'", { env = { TSTATS_INFLUX_URL = influx.url } })
    assert.are.equal(3, rc, err)
    assert.are.equal("1\t1\tedge one\tcdn=1\t1523.25\ta1\tb 2\n", out)
    local rows = stack.influx_rows(stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"."queued"', "cache_stats"))
    assert.are.equal(1, rows[1].count)
  end)

  it("decodes only the requested fields of Traffic Ops records (tstats.json.decode_records)", function()
    local script = config([[
      local body = io.open(arg[1]):read("a")
      local r = assert(tstats.json.decode_records(body, { "hostName", "tcpPort", "cacheGroup", "interfaces" }))
      assert(#r == 1 and r[1].hostName == "mid" and r[1].cacheGroup == "CDN_in_a_Box_Mid")
      assert(math.type(r[1].tcpPort) == "integer" and r[1].tcpPort == 80)
      assert(r[1].interfaces == nil and r[1].domainName == nil, "nested values and unrequested fields are left out")
      local n = 0 for _ in pairs(r[1]) do n = n + 1 end
      assert(n == 3, "3 fields, got " .. n)
      local nested = assert(tstats.json.decode_records('{"x":{"response":[{"a":9}]},"response":[{"a":{"b":1}},{"a":"ok"}]}', { "a" }))
      assert(#nested == 2 and nested[1].a == nil and nested[2].a == "ok")
      local none, err = tstats.json.decode_records('{"alerts":[]}', { "a" })
      assert(none == nil and err:find("no \"response\""), err)
      local bad, err2 = tstats.json.decode_records('{"response":[{"a":1,', { "a" })
      assert(bad == nil and err2:find("invalid JSON"), err2)
      print("ok")
    ]])
    local rc, out, err = stack.run(tstats .. " script " .. script .. " " .. stack.root() .. "/spec/fixtures/to/to_v5_servers_GET_response.json",
      { env = { TSTATS_INFLUX_URL = influx.url } })
    assert.are.equal(0, rc, err)
    assert.are.equal("ok\n", out)
  end)

  it("the Lua API's InfluxDB calls fail over between influxdb.urls and never show credentials", function()
    local dead = "http://alice:s3cret-pw@127.0.0.1:1"
    local cfg = config(([[return { influxdb = { urls = { %q, %q }, timeout = 2 },
      traffic_ops = { url = "http://127.0.0.1:1", user = "u", password = "p" }, summary = { enabled = false } }]]):format(dead, influx.url))
    local script = config([[
      local rows, err = tstats.influx.query("SHOW DATABASES")
      assert(rows, err)
      print("ok")
    ]])
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " script " .. script)
    assert.are.equal(0, rc, err)
    assert.are.equal("ok\n", out)
    local cfg2 = config(([[return { influxdb = { urls = { %q }, timeout = 2 },
      traffic_ops = { url = "http://127.0.0.1:1", user = "u", password = "p" }, summary = { enabled = false } }]]):format(dead))
    local script2 = config([[
      local rows, err = tstats.influx.query("SHOW DATABASES")
      assert(rows == nil)
      print(err)
    ]])
    rc, out, err = stack.run(tstats .. " --config " .. cfg2 .. " script " .. script2)
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("127.0.0.1:1", 1, true), out)
    assert.falsy(out:find("s3cret", 1, true), out)
    assert.falsy(err:find("s3cret", 1, true), err)
  end)

  it("a script error is reported with file:line and a non-zero exit, not a crash", function()
    local script = config("local x = nil\nreturn x.field\n")
    local rc, _, err = stack.run(tstats .. " script " .. script, { env = { TSTATS_INFLUX_URL = influx.url } })
    assert.are.equal(2, rc)
    assert.truthy(err:find(":2: attempt to index", 1, true), err)
  end)
end)
