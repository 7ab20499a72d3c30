-- stack_spec.lua: proves the runtime test stack (spec/runtime/stack.lua, scripts/lib/*.sh) works.
-- Test side only: real influxd 1.6.7 and PostgreSQL 15 on free loopback ports, no tstats code.
-- If this file fails, every other runtime spec's result means nothing.
local stack = require("spec.runtime.stack")

describe("test stack", function()
  teardown(function() stack.cleanup_all() end)

  describe("influxd", function()
    local influx

    setup(function() influx = stack.influxd_start() end)

    it("listens on a free loopback port of its own", function()
      assert.is_number(influx.port)
      assert.are.equal("http://127.0.0.1:" .. influx.port, influx.url)
      assert.is_true(influx.port ~= 8086 and influx.port ~= 8088)
      -- The port is ours: the listening socket belongs to the pid we recorded.
      local rc, out = stack.run("ss -Hltnp " .. stack.quote("( sport = :" .. influx.port .. " )"))
      assert.are.equal(0, rc)
      assert.truthy(out:find("pid=" .. influx.pid .. ",", 1, true), out)
    end)

    it("round-trips a write and a query with exact integers", function()
      local _, st = stack.influx_query(influx.url, 'CREATE DATABASE "stack_rt"')
      assert.are.equal(200, st)
      local status, body = stack.influx_write(influx.url, "stack_rt",
        "bandwidth.1min,cdn=cdn1,hostname=edge-1 value=42i 1700000000000\n" ..
        "bandwidth.1min,cdn=cdn1,hostname=edge-2 value=7i 1700000000000\n", "ms")
      assert.are.equal(204, status, body)
      local res = stack.influx_query(influx.url,
        'SELECT value FROM "bandwidth.1min" WHERE hostname = \'edge-1\'', "stack_rt", { epoch = "ms" })
      local rows = stack.influx_rows(res)
      assert.are.equal(1, #rows)
      assert.are.equal(1700000000000, math.tointeger(rows[1].time))
      assert.are.equal(42, math.tointeger(rows[1].value))
      res = stack.influx_query(influx.url, 'SELECT count(value) FROM "bandwidth.1min"', "stack_rt")
      assert.are.equal(2, math.tointeger(stack.influx_rows(res)[1].count))
    end)

    it("answers a bad line with 400 and an unknown database with 404", function()
      local status = stack.influx_write(influx.url, "stack_rt", "no fields here\n", "ms")
      assert.are.equal(400, status)
      status = stack.influx_write(influx.url, "no_such_db", "m v=1 1\n", "ms")
      assert.are.equal(404, status)
    end)

    it("accepts a gzip body", function()
      local status, body = stack.influx_write(influx.url, "stack_rt", "gz v=7i 1700000000\n", "s", nil,
        { gzip = true })
      assert.are.equal(204, status, body)
      local rows = stack.influx_rows(stack.influx_query(influx.url, "SELECT v FROM gz", "stack_rt"))
      assert.are.equal(7, math.tointeger(rows[1].v))
    end)

    it("refuses a port that is already taken", function()
      -- The port is taken by another real influxd: exactly the server that would
      -- answer /ping 204 and fool a start that trusted /ping.
      local port = stack.free_port()
      local other = stack.influxd_start({ port = port })
      assert.are.equal(port, other.port)
      local ok, err = pcall(stack.influxd_start, { port = port })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("already taken", 1, true), tostring(err))
      -- The refused start must not have disturbed the running one.
      local _, st = stack.influx_query(other.url, "SHOW DATABASES")
      assert.are.equal(200, st)
      other:stop()
    end)

    it("stop ends the process", function()
      local tmp = stack.influxd_start()
      local pid = tmp.pid
      tmp:stop()
      assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null") == true)
    end)
  end)

  describe("influxd with auth", function()
    local influx
    setup(function()
      influx = stack.influxd_start({ auth = { user = "admin", password = "s3cr'et" } })
    end)

    it("refuses no credentials and a wrong password with 401", function()
      local _, st = stack.influx_query(influx.url, "SHOW DATABASES")
      assert.are.equal(401, st)
      _, st = stack.influx_query(influx.url, "SHOW DATABASES", nil, { user = "admin", password = "wrong" })
      assert.are.equal(401, st)
      local status = stack.influx_write(influx.url, "x", "m v=1 1\n", "s", nil,
        { user = "admin", password = "wrong" })
      assert.are.equal(401, status)
    end)

    it("accepts the right password", function()
      local creds = { user = "admin", password = "s3cr'et" }
      local _, st = stack.influx_query(influx.url, "CREATE DATABASE a", nil, creds)
      assert.are.equal(200, st)
      local status = stack.influx_write(influx.url, "a", "m v=1i 1\n", "s", nil, creds)
      assert.are.equal(204, status)
    end)
  end)

  describe("PostgreSQL", function()
    local pg
    setup(function() pg = stack.pg_start() end)

    it("has the stats_summary table with Traffic Ops' columns", function()
      local cols = pg:psql("SELECT column_name || ':' || data_type FROM information_schema.columns " ..
        "WHERE table_name = 'stats_summary' ORDER BY ordinal_position")
      assert.are.equal(table.concat({
        "id:bigint", "cdn_name:text", "deliveryservice_name:text", "stat_name:text",
        "stat_value:double precision", "summary_time:timestamp with time zone", "stat_date:date",
      }, "\n") .. "\n", cols)
      local id = pg:psql("INSERT INTO stats_summary (deliveryservice_name, stat_name, stat_value, stat_date) " ..
        "VALUES ('all', 'daily_maxgbps', 1.25, '2024-01-02') RETURNING id")
      assert.are.equal("1", id:match("^%s*(.-)%s*$"))
      -- No unique key: the same summary twice is two rows.
      pg:psql("INSERT INTO stats_summary (deliveryservice_name, stat_name, stat_value, stat_date) " ..
        "VALUES ('all', 'daily_maxgbps', 1.25, '2024-01-02')")
      assert.are.equal("all|2\n", pg:psql("SELECT cdn_name, count(*) FROM stats_summary GROUP BY cdn_name"))
    end)

    it("refuses a wrong password and accepts the right one", function()
      assert.truthy(pg.conninfo:find("^postgresql://tstats:"))
      assert.truthy(pg.conninfo:find("@127.0.0.1:" .. pg.port .. "/traffic_ops", 1, true))
      local bad = pg.conninfo:gsub(":" .. pg.password .. "@", ":wrong@")
      local rc, _, err = stack.run("psql -X -A -t " .. stack.quote(bad) .. " -c 'SELECT 1'", { timeout = 30 })
      assert.are_not.equal(0, rc)
      assert.truthy(err:find("password authentication failed", 1, true), err)
      local out
      rc, out, err = stack.run("psql -X -A -t " .. stack.quote(pg.conninfo) .. " -c 'SELECT current_user'",
        { timeout = 30 })
      assert.are.equal(0, rc, err)
      assert.are.equal("tstats\n", out)
    end)
  end)

  describe("processes", function()
    it("run captures exit code, stdout and stderr separately", function()
      local rc, out, err = stack.run("echo out; echo err >&2; exit 3")
      assert.are.equal(3, rc)
      assert.are.equal("out\n", out)
      assert.are.equal("err\n", err)
      rc = stack.run("sleep 5", { timeout = 0.3 })
      assert.are.equal(124, rc)
    end)

    it("spawn reports the signal a process died of", function()
      local p = stack.spawn("exec sleep 30")
      assert.is_true(p:alive())
      p:kill("TERM")
      assert.are.equal(128 + 15, p:wait(5))
      assert.is_false(p:alive())
    end)

    it("wait_until gives up after its timeout", function()
      local t0 = stack.now()
      local ok = stack.wait_until(function() return false end, 0.3, 0.05)
      assert.is_false(ok)
      assert.is_true(stack.now() - t0 >= 0.3)
    end)
  end)
end)
