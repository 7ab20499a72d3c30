-- writer_spec.lua: the C InfluxDB writer (src/writer.c and its rooms w*.c, src/http.c) against REAL influxd 1.6.7.
-- Test side: drives `test_writer --it ...` (spec/c/it_writer.c), which submits deterministic
-- points, drains and prints one JSON line of stats; the data is then read back from influxd.
-- Point k: host=h<k % S>, cdn=it, time start + (k // S) * 1000 ms, value k / 4.
local stack = require("spec.runtime.stack")
local cjson = require("cjson")
local q = stack.quote

local START = 1700000000000

local function bin() return stack.bin("test_writer") end

-- Last JSON line of the driver with the given phase, decoded.
local function stats_line(out, phase)
  local found
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" and line:find('"phase":"' .. phase .. '"', 1, true) then found = line end
  end
  return found and cjson.decode(found)
end

local function driver(args, timeout)
  local rc, out, err = stack.run(q(bin()) .. " --it " .. args, { timeout = timeout or 90 })
  local s = stats_line(out, "done")
  assert(rc == 0 and s, "driver failed (exit " .. tostring(rc) .. "): " .. out .. err)
  return s, err
end

local function count(url, db, what, opts)
  local res, st, body = stack.influx_query(url, "SELECT count(" .. what .. ") FROM " .. (opts and opts.from or "it_bw"),
    db, opts)
  assert(st == 200, "query failed: " .. tostring(body))
  local rows = stack.influx_rows(res)
  return rows[1] and math.tointeger(rows[1].count) or 0
end

local function create_db(url, db, opts)
  local _, st, body = stack.influx_query(url, 'CREATE DATABASE "' .. db .. '"', nil, opts)
  assert(st == 200, "CREATE DATABASE failed: " .. tostring(body))
end

describe("writer against influxd 1.6.7", function()
  local A
  setup(function()
    A = stack.influxd_start()
  end)
  teardown(function() stack.cleanup_all() end)

  it("round-trips every point exactly (count, values, timestamps), gzip on", function()
    create_db(A.url, "rt")
    local N, S = 20000, 100
    local s = driver(table.concat({ "--urls", q(A.url), "--db rt --points", N, "--series", S,
      "--max-publish-size 3000 --gzip --drain-ms 20000" }, " "))
    assert.are.equal(N, s.written)
    assert.are.equal(0, s.dropped)
    assert.are.equal(0, s.rejected)
    assert.are.equal(0, s.requests_failed)
    assert.are.equal(7, s.requests_ok)   -- ceil(20000 / 3000) chunks
    assert.are.equal(N, count(A.url, "rt", "value"))
    -- first and last point of the run, exact
    local res = stack.influx_query(A.url,
      "SELECT value FROM it_bw WHERE host = 'h7' ORDER BY time ASC LIMIT 1", "rt", { epoch = "ms" })
    local r = stack.influx_rows(res)[1]
    assert.are.equal(START, math.tointeger(r.time))
    assert.are.equal(1.75, r.value)
    res = stack.influx_query(A.url,
      "SELECT value, cdn FROM it_bw WHERE host = 'h99' ORDER BY time DESC LIMIT 1", "rt", { epoch = "ms" })
    r = stack.influx_rows(res)[1]
    assert.are.equal(START + 199 * 1000, math.tointeger(r.time))
    assert.are.equal(4999.75, r.value)
    assert.are.equal("it", r.cdn)
    -- 100 series, 200 points each
    res = stack.influx_query(A.url, "SELECT count(value) FROM it_bw GROUP BY host", "rt")
    local series = res.results[1].series
    assert.are.equal(S, #series)
    for _, sr in ipairs(series) do assert.are.equal(N // S, math.tointeger(sr.values[1][2])) end
  end)

  it("measures throughput into influxd (300k points, 1000 series)", function()
    create_db(A.url, "tp")
    local N = 300000
    local s = driver("--urls " .. q(A.url) .. " --db tp --points " .. N .. " --series 1000 --drain-ms 60000")
    assert.are.equal(N, s.written)
    assert.are.equal(N, count(A.url, "tp", "value"))
    print(string.format("\n  writer throughput: %d points in %d ms = %d points/s, %d requests, %d bytes",
      s.written, s.elapsed_ms, s.points_per_s, s.requests_ok, s.bytes_sent))
    local g = driver("--urls " .. q(A.url) .. " --db tp --points " .. N
      .. " --series 1000 --start-ms 1700500000000 --gzip --drain-ms 60000")
    assert.are.equal(N, g.written)
    print(string.format("  writer throughput gzip: %d points in %d ms = %d points/s, %d bytes",
      g.written, g.elapsed_ms, g.points_per_s, g.bytes_sent))
    assert.is_true(g.bytes_sent * 4 < s.bytes_sent)
  end)

  it("400: a bad line is rejected and counted, the good lines are stored, no retry", function()
    create_db(A.url, "bad")
    local s, err = driver("--urls " .. q(A.url) .. " --db bad --points 0 --text-lines 10 --bad-line --drain-ms 5000")
    assert.are.equal(11, s.submitted)
    assert.are.equal(10, s.written)
    assert.are.equal(1, s.rejected)
    assert.are.equal(0, s.dropped)
    assert.are.equal(1, s.requests_failed)
    assert.are.equal(0, s.retries)
    assert.are.equal(10, count(A.url, "bad", "n", { from = "it_text" }))
    -- one log line with the status and the server's message
    assert.truthy(err:find("HTTP 400", 1, true), err)
    assert.truthy(err:find("unable to parse 'it_text,src=driver n='", 1, true), err)
  end)

  it("404: a missing database keeps the data and retries; created mid-run, the data arrives", function()
    local dir = stack.tmpdir()
    local log = dir .. "/driver.log"
    local h = stack.spawn(q(bin()) .. " --it --urls " .. q(A.url)
      .. " --db late --points 5000 --series 50 --backoff-min-ms 100 --drain-ms 20000", log)
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(log) or ""):find("database not found", 1, true)
    end, 15))
    -- Draining retries every 100 ms: a second failure before the database exists, even on a busy machine.
    stack.sleep(1.0)
    create_db(A.url, "late")
    assert.are.equal(0, h:wait(30))
    local out = stack.read_file(log)
    local s = stats_line(out, "done")
    assert.is_table(s, out)
    assert.are.equal(5000, s.written)
    assert.are.equal(0, s.dropped)
    assert.is_true(s.requests_failed >= 2, out)
    assert.is_true(s.retries >= 2, out)
    assert.truthy(out:find("HTTP 404", 1, true))
    assert.are.equal(5000, count(A.url, "late", "value"))
  end)

  it("500 retention policy not found: kept for retry (dropped and counted only at the deadline)", function()
    create_db(A.url, "rpdb")
    local s, err = driver("--urls " .. q(A.url) .. " --db rpdb --rp nope --points 300 --drain-ms 2000")
    assert.are.equal(0, s.written)
    assert.are.equal(0, s.rejected)
    assert.are.equal(300, s.dropped)
    assert.are.equal(300, s.drain_lost)
    assert.is_true(s.requests_failed >= 3)
    assert.is_true(s.retries >= 2)
    assert.truthy(err:find("HTTP 500", 1, true))
    assert.truthy(err:find("retention policy not found: nope", 1, true))
    -- and once the RP exists, the retried data lands in it
    local dir = stack.tmpdir()
    local log = dir .. "/driver.log"
    local h = stack.spawn(q(bin()) .. " --it --urls " .. q(A.url)
      .. " --db rpdb --rp later --points 300 --backoff-min-ms 100 --drain-ms 20000", log)
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(log) or ""):find("retention policy not found", 1, true)
    end, 15))
    local _, st = stack.influx_query(A.url, 'CREATE RETENTION POLICY "later" ON "rpdb" DURATION 0s REPLICATION 1')
    assert.are.equal(200, st)
    assert.are.equal(0, h:wait(30))
    s = stats_line(stack.read_file(log), "done")
    assert.are.equal(300, s.written)
    assert.are.equal(0, s.dropped)
    assert.are.equal(300, count(A.url, "rpdb", "value", { from = '"rpdb"."later".it_bw' }))
  end)

  it("fails over to the second influxd when the first stops, nothing lost", function()
    local B = stack.influxd_start()
    local C = stack.influxd_start()
    create_db(B.url, "fo")
    create_db(C.url, "fo")
    local dir = stack.tmpdir()
    local log, go = dir .. "/driver.log", dir .. "/go"
    local h = stack.spawn(q(bin()) .. " --it --urls " .. q(B.url .. "," .. C.url)
      .. " --db fo --points 20000 --series 100 --max-publish-size 2500 --backoff-min-ms 200"
      .. " --phase2-wait " .. q(go) .. " --drain-ms 20000", log)
    local p1 = stack.wait_until(function() return stats_line(stack.read_file(log) or "", "1") end, 30)
    assert.is_table(p1, stack.read_file(log))
    assert.are.equal(10000, p1.written)
    assert.are.equal(0, p1.current_url)
    assert.are.equal(10000, count(B.url, "fo", "value"))   -- phase 1 went to the preferred (first) URL
    B:stop()
    stack.write_file(go, "")
    assert.are.equal(0, h:wait(40))
    local out = stack.read_file(log)
    local s = stats_line(out, "done")
    assert.are.equal(20000, s.written)
    assert.are.equal(0, s.dropped)
    assert.are.equal(1, s.current_url)
    assert.is_true(s.requests_failed >= 1, out)
    assert.are.equal(10000, count(C.url, "fo", "value"))   -- phase 2, after the failover
    C:stop()
  end)

  it("auth: the right password writes, a wrong one is refused (401), counted, never silently dropped", function()
    local auth = { user = "admin", password = "s3cret-pw" }
    local D = stack.influxd_start({ auth = auth })
    create_db(D.url, "authdb", auth)
    local s = driver("--urls " .. q(D.url) .. " --db authdb --points 1000 --user admin --password s3cret-pw"
      .. " --drain-ms 10000")
    assert.are.equal(1000, s.written)
    assert.are.equal(0, s.requests_failed)
    local bad, err = driver("--urls " .. q(D.url) .. " --db authdb --points 1000 --start-ms 1700100000000"
      .. " --user admin --password wrong-pw --drain-ms 2000")
    assert.are.equal(0, bad.written)
    assert.are.equal(1000, bad.dropped)          -- kept for retry until the deadline, then counted
    assert.are.equal(1000, bad.drain_lost)
    assert.is_true(bad.requests_failed >= 2)
    assert.truthy(err:find("HTTP 401", 1, true), err)
    assert.falsy(err:find("wrong-pw", 1, true))  -- secrets never logged
    local nouser = driver("--urls " .. q(D.url) .. " --db authdb --points 10 --drain-ms 300")
    assert.are.equal(0, nouser.written)
    assert.are.equal(10, nouser.dropped)
    assert.are.equal(1000, count(D.url, "authdb", "value", auth))
    D:stop()
  end)

  it("queries through the writer (POST /query, epoch ms) and reports InfluxQL errors", function()
    create_db(A.url, "qdb")
    local s = driver("--urls " .. q("http://127.0.0.1:1," .. A.url)
      .. " --db qdb --points 40 --series 4 --drain-ms 10000"
      .. " --query " .. q("SELECT value FROM it_bw WHERE host = 'h3' ORDER BY time DESC LIMIT 1"))
    assert.are.equal(40, s.written)
    assert.are.equal(1, s.current_url)   -- the dead first URL was skipped
    local series = s.query.results[1].series[1]
    assert.are.equal(START + 9 * 1000, math.tointeger(series.values[1][1]))
    assert.are.equal(9.75, series.values[1][2])
    local e = driver("--urls " .. q(A.url) .. " --db qdb --points 0 --drain-ms 100 --query " .. q("SELECT FROM"))
    assert.truthy(e.query_error and e.query_error:find("HTTP 400", 1, true), cjson.encode(e))
  end)
end)
