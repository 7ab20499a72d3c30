-- rollup_spec.lua: runtime specs (test side) for daily summaries and CQ backfills: the real
-- tstats binary against a real influxd 1.6.7 and a real PostgreSQL 15 (spec/runtime/stack.lua).
-- Golden values are computed by hand in the comments; every number is compared exactly.
-- Run: TS_BUILD_DIR=build lua5.4 /usr/bin/busted --run=runtime spec/runtime/rollup_spec.lua
local stack = require("spec.runtime.stack")

local DAY = 86400
local q = stack.quote

local function bin_ok()
  local f = io.open(stack.bin("tstats"), "rb")
  if f then f:close() return true end
  return false
end

describe("daily summaries (real influxd + PostgreSQL) #asan", function()
  if not bin_ok() then
    pending("tstats binary not built at " .. stack.bin("tstats"))
    return
  end

  local influx, pg, dir, cfgfile
  -- Two days before the newest day closed 10 min (the grace) ago: inside the
  -- 30 d "monthly" RP, and the tick below always has exactly D, D+1, D+2 to do.
  local D = (os.time() - 600) // DAY * DAY - 3 * DAY
  local Ddate = os.date("!%Y-%m-%d", D)

  local function iq(query, db)
    local res, status, body = stack.influx_query(influx.url, query, db, { epoch = "s" })
    assert.are.equal(200, status, body)
    assert.is_nil(res.results[1].error, body)
    return res
  end

  local function tstats(args)
    return stack.run(q(stack.bin("tstats")) .. " --config " .. q(cfgfile) .. " " .. args, { timeout = 120 })
  end

  -- pg.sh has no restart: stop with it, start again with pg_ctl on the same port,
  -- so the conninfo tstats holds stays valid.
  local function pg_down()
    os.execute(q(stack.root() .. "/scripts/lib/pg.sh") .. " stop " .. q(pg.dir))
  end
  local function pg_up()
    local cmd = ("cd / && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D %s -l %s -w -t 60 "
      .. "-o %s start >/dev/null"):format(q(pg.dir .. "/data"), q(pg.dir .. "/postgres.log"),
      q(("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off"):format(pg.port, pg.dir .. "/sock")))
    if os.execute("id -u | grep -qx 0") ~= true then cmd = cmd:gsub("runuser %-u postgres %-%- ", "") end
    assert.is_true(os.execute(cmd) == true, "pg_ctl start failed")
  end

  local function summary_rows(date)
    local out = pg:psql(("SELECT cdn_name, deliveryservice_name, stat_name, stat_value FROM stats_summary "
      .. "WHERE stat_date = '%s' ORDER BY cdn_name, stat_name"):format(date))
    local rows = {}
    for line in out:gmatch("[^\n]+") do
      local c, ds, s, v = line:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)$")
      rows[#rows + 1] = { c, ds, s, tonumber(v) }
    end
    return rows
  end

  local function daily_points(stat)
    local res = iq(('SELECT * FROM "indefinite"."%s" ORDER BY time'):format(stat), "daily_stats")
    local rows = {}
    for _, r in ipairs(stack.influx_rows(res)) do
      rows[#rows + 1] = { r.cdn, r.deliveryservice, math.tointeger(r.time), r.value }
    end
    table.sort(rows, function(a, b) return a[1] < b[1] end)
    return rows
  end

  setup(function()
    influx = stack.influxd_start()
    pg = stack.pg_start()
    dir = stack.tmpdir()
    cfgfile = dir .. "/config.lua"
    stack.write_file(cfgfile, ([[
return {
  traffic_ops = { url = "http://127.0.0.1:9" },
  influxdb = { urls = { %q } },
  state_dir = %q,
  summary = { sinks = { "pg" }, rollups = { "daily" }, grace = 600, max_catchup_days = 31 },
  postgres = { conninfo = %q },
}
]]):format(influx.url, dir, pg.conninfo))
    for _, s in ipairs {
      "CREATE DATABASE cache_stats",
      "CREATE RETENTION POLICY daily ON cache_stats DURATION 26h REPLICATION 1 DEFAULT",
      "CREATE RETENTION POLICY monthly ON cache_stats DURATION 30d REPLICATION 1",
      "CREATE RETENTION POLICY indefinite ON cache_stats DURATION INF REPLICATION 1",
      "CREATE DATABASE daily_stats",
      "CREATE RETENTION POLICY indefinite ON daily_stats DURATION INF REPLICATION 1 DEFAULT",
      "CREATE DATABASE deliveryservice_stats",
      "CREATE RETENTION POLICY daily ON deliveryservice_stats DURATION 26h REPLICATION 1 DEFAULT",
      "CREATE RETENTION POLICY monthly ON deliveryservice_stats DURATION 30d REPLICATION 1",
      "CREATE RETENTION POLICY indefinite ON deliveryservice_stats DURATION INF REPLICATION 1",
    } do iq(s) end
    -- cdn-a: a point at exactly 00:00, gaps, the max at 12:00, the last minute,
    -- and points just outside the day on both sides. cdn-b: its max at 00:00.
    local lines = {
      ("bandwidth.cdn.1min,cdn=cdn-a value=9000000000 %d"):format(D - 60),
      ("bandwidth.cdn.1min,cdn=cdn-a value=1000000 %d"):format(D),
      ("bandwidth.cdn.1min,cdn=cdn-a value=2500000 %d"):format(D + 60),
      ("bandwidth.cdn.1min,cdn=cdn-a value=2000 %d"):format(D + 6 * 3600),
      ("bandwidth.cdn.1min,cdn=cdn-a value=4000000 %d"):format(D + 12 * 3600),
      ("bandwidth.cdn.1min,cdn=cdn-a value=500000 %d"):format(D + DAY - 60),
      ("bandwidth.cdn.1min,cdn=cdn-a value=9000000000 %d"):format(D + DAY),
      ("bandwidth.cdn.1min,cdn=cdn-b value=7777777 %d"):format(D),
      ("bandwidth.cdn.1min,cdn=cdn-b value=1.5 %d"):format(D + 3600),
    }
    local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    assert.are.equal(204, st, body)
  end)

  teardown(function() stack.cleanup_all() end)

  -- kB = (1e6 + 2.5e6 + 2000 + 4e6 + 5e5) * 60 / 8 = 60,015,000 -> 0.060015 TB;
  -- cdn-b: (7777777 + 1.5) * 60 / 8 = 58,333,338.75 kB -> 0.05833333875 TB.
  local want_pg = {
    { "cdn-a", "all", "daily_bytesserved", 0.060015 },
    { "cdn-a", "all", "daily_maxgbps", 4.0 },
    { "cdn-b", "all", "daily_bytesserved", 0.05833333875 },
    { "cdn-b", "all", "daily_maxgbps", 7.777777 },
  }

  it("writes exact daily_maxgbps / daily_bytesserved to InfluxDB and stats_summary", function()
    local rc, out, err = tstats("rollup --from " .. Ddate .. " --to " .. Ddate)
    assert.are.equal(0, rc, out .. err)
    assert.truthy((out .. err):find("max gbps for cdn cdn-a = 4", 1, true), out .. err)
    assert.truthy((out .. err):find("TBytes served for cdn cdn-b = 0.05833333875", 1, true), out .. err)
    assert.are.same({ { "cdn-a", "all", D + 12 * 3600, 4.0 }, { "cdn-b", "all", D, 7.777777 } },
      daily_points("daily_maxgbps"))
    assert.are.same({ { "cdn-a", "all", D, 0.060015 }, { "cdn-b", "all", D, 0.05833333875 } },
      daily_points("daily_bytesserved"))
    assert.are.same(want_pg, summary_rows(Ddate))
  end)

  it("is idempotent: a rerun leaves one row and one point per key", function()
    local rc, out, err = tstats("rollup --from " .. Ddate .. " --to " .. Ddate)
    assert.are.equal(0, rc, out .. err)
    assert.are.same(want_pg, summary_rows(Ddate))
    assert.are.equal("4", (pg:psql("SELECT count(*) FROM stats_summary"):gsub("%s+$", "")))
    assert.are.equal(2, #daily_points("daily_maxgbps"))
    assert.are.equal(2, #daily_points("daily_bytesserved"))
  end)

  it("cdn_report.lua prints both stores side by side", function()
    local rc, out, err = tstats("script " .. q(stack.root() .. "/lua/scripts/cdn_report.lua") .. " " .. Ddate .. " "
      .. Ddate)
    assert.are.equal(0, rc, out .. err)
    assert.truthy(out:find(Ddate .. "\tcdn-a\t4\t0.060015\t4\t0.060015\t\n", 1, true), out)
    assert.truthy(out:find(Ddate .. "\tcdn-b\t7.777777\t0.05833333875\t7.777777\t0.05833333875\t\n", 1, true), out)
    pg:psql(("INSERT INTO stats_summary (cdn_name, deliveryservice_name, stat_name, stat_value, stat_date)"
      .. " VALUES ('cdn-b', 'all', 'daily_maxgbps', 1.5, '%s')"):format(Ddate))
    rc, out, err = tstats("script " .. q(stack.root() .. "/lua/scripts/cdn_report.lua") .. " " .. Ddate .. " "
      .. Ddate .. " cdn-b")
    assert.are.equal(0, rc, out .. err)
    assert.truthy(out:find("\tcdn-b\t7.777777\t0.05833333875\t1.5\t0.05833333875\tdaily_maxgbps differs; "
      .. "1 duplicate row(s) in stats_summary\n", 1, true), out)
    assert.falsy(out:find("cdn-a", 1, true), out)
  end)

  it("reimport_tm_payload.lua writes a saved CacheStats answer through the stock mapping", function()
    local script = q(stack.root() .. "/lua/scripts/reimport_tm_payload.lua")
    local fixture = q(stack.root() .. "/spec/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json")
    local rc, out, err = tstats("script " .. script .. " " .. fixture .. " cdn-x --dry-run")
    assert.are.equal(0, rc, out .. err)
    assert.truthy(out:find("bandwidth,cdn=cdn-x,hostname=edge value=1523 1589471331498\n", 1, true), out)
    rc, out, err = tstats("script " .. script .. " " .. fixture .. " cdn-x --rp indefinite")
    assert.are.equal(0, rc, out .. err)
    local rows = stack.influx_rows(iq('SELECT value, cdn FROM "indefinite"."bandwidth" WHERE hostname = \'edge\'',
      "cache_stats"))
    assert.are.same({ { time = 1589471331, value = 1523, cdn = "cdn-x" } }, rows)
    rc, out, err = tstats("script " .. script)
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("usage", 1, true), err)
  end)

  it("reports a PostgreSQL outage and writes the day once it is back", function()
    -- Make the store say the day before D is the last one done: the daemon's
    -- tick must then (re)compute D and the days after it.
    pg:psql(("DELETE FROM stats_summary; INSERT INTO stats_summary (cdn_name, deliveryservice_name, stat_name,"
      .. " stat_value, stat_date) VALUES ('cdn-a', 'all', 'daily_maxgbps', 1, '%s')"):format(
      os.date("!%Y-%m-%d", D - DAY)))
    local script = dir .. "/tick.lua"
    stack.write_file(script, [[
local n, err = require("summary").tick()
print("tick result", n, err)
return n ~= nil
]])
    pg_down()
    local rc, out, err = tstats("rollup --from " .. Ddate .. " --to " .. Ddate)
    assert.are_not.equal(0, rc)
    assert.truthy((out .. err):find("rollup failed", 1, true), out .. err)
    rc, out, err = tstats("script " .. q(script))
    assert.are_not.equal(0, rc, out .. err)
    assert.truthy((out .. err):find("tick result\tnil", 1, true), out .. err)
    pg_up()
    rc, out, err = tstats("script " .. q(script))
    assert.are.equal(0, rc, out .. err)
    -- D .. yesterday: 3 days, D+1 holds cdn-a's 00:00 point only.
    assert.truthy((out .. err):find("tick result\t3", 1, true), out .. err)
    assert.are.same(want_pg, summary_rows(Ddate))
    local next_day = summary_rows(os.date("!%Y-%m-%d", D + DAY))
    assert.are.same({ { "cdn-a", "all", "daily_bytesserved", 9e9 * 7.5 / 1e9 },
                      { "cdn-a", "all", "daily_maxgbps", 9000.0 } }, next_day)
    -- A new process only redoes the day without data (it left no record; a
    -- running daemon remembers it), and changes nothing.
    rc, out, err = tstats("script " .. q(script))
    assert.are.equal(0, rc, out .. err)
    assert.truthy((out .. err):find("tick result\t1", 1, true), out .. err)
    assert.truthy((out .. err):find(os.date("!%Y-%m-%d", D + 2 * DAY) .. ": no data", 1, true), out .. err)
    assert.are.equal("7", (pg:psql("SELECT count(*) FROM stats_summary"):gsub("%s+$", "")))
  end)

  it("backfill-cq rebuilds the 1-minute series from raw data, producers first", function()
    -- Raw data 2 h ago (the raw RP keeps 26 h): two caches of cdn-c, 10 s samples.
    local T0 = (os.time() - 2 * 3600) // 3600 * 3600
    local lines = {}
    for m = 0, 9 do
      for s = 0, 50, 10 do
        local t = T0 + m * 60 + s
        lines[#lines + 1] = ("bandwidth,cdn=cdn-c,hostname=edge-1,cachegroup=cg1,type=EDGE value=%d %d"):format(1000 + m, t)
        lines[#lines + 1] = ("bandwidth,cdn=cdn-c,hostname=edge-2,cachegroup=cg1,type=EDGE value=%d %d"):format(
          2000 + s, t) -- mean over the minute: 2025
      end
    end
    local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "daily")
    assert.are.equal(204, st, body)
    local ds = {}
    for m = 0, 4 do
      ds[#ds + 1] = ("kbps,cdn=cdn-c,deliveryservice=ds1,cachegroup=total value=%d %d"):format(100 * (m + 1), T0 + m * 60)
      ds[#ds + 1] = ("kbps,cdn=cdn-c,deliveryservice=ds1,cachegroup=cg1 value=7 %d"):format(T0 + m * 60)
    end
    st, body = stack.influx_write(influx.url, "deliveryservice_stats", table.concat(ds, "\n") .. "\n", "s", "daily")
    assert.are.equal(204, st, body)

    local date = os.date("!%Y-%m-%d", T0)
    local rc, out, err = tstats("backfill-cq --from " .. date .. " --to " .. date)
    assert.are.equal(0, rc, out .. err)

    local rows = stack.influx_rows(iq('SELECT value FROM "monthly"."bandwidth.cdn.1min" WHERE cdn = \'cdn-c\'',
      "cache_stats"))
    assert.are.equal(10, #rows)
    for m, r in ipairs(rows) do
      assert.are.equal(T0 + (m - 1) * 60, math.tointeger(r.time))
      assert.are.equal(1000 + (m - 1) + 2025, r.value) -- edge-1 mean + edge-2 mean
    end
    rows = stack.influx_rows(iq('SELECT value, cachegroup FROM "monthly"."bandwidth.1min" WHERE hostname = \'edge-2\'',
      "cache_stats"))
    assert.are.equal(10, #rows)
    assert.are.equal("cg1", rows[1].cachegroup) -- GROUP BY * kept the tags
    rows = stack.influx_rows(iq('SELECT value FROM "monthly"."kbps.ds.1min"', "deliveryservice_stats"))
    assert.are.equal(5, #rows) -- only cachegroup = 'total'
    -- The 1d CQ ran over the whole day, after kbps.ds.1min was filled: max 500 at 00:00 of that day.
    rows = stack.influx_rows(iq('SELECT value FROM "indefinite"."max.kbps.ds.1day"', "deliveryservice_stats"))
    assert.are.equal(1, #rows)
    assert.are.equal(500, rows[1].value)
    assert.are.equal(T0 // DAY * DAY, math.tointeger(rows[1].time))
  end)
end)
