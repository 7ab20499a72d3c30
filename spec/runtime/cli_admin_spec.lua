-- Runtime spec (issue "a command line an operator can trust"): the operator's one-off
-- commands against real influxd instances: setup-influx's per-object report, --print,
-- every URL, a dead server; rollup/backfill-cq errors that name what exists and why
-- nothing was written; built-in scripts by name; a commented starting configuration.
local stack = require "spec.runtime.stack"

local tstats = stack.bin("tstats")
local sq = stack.quote
local DAY = 86400

local tmp
local function file(body)
  local path = tmp .. "/f-" .. tostring(math.random(1e9)) .. ".lua"
  stack.write_file(path, body)
  return path
end

local function cfg_for(urls, extra)
  local list = {}
  for _, u in ipairs(urls) do list[#list + 1] = ("%q"):format(u) end
  return file(([[return { traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { %s }, timeout = 5 },
    summary = { sinks = {} }, %s }]]):format(table.concat(list, ", "), extra or ""))
end

local function lines_of(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

describe("operator commands #asan", function()
  local a, b
  setup(function()
    tmp = stack.tmpdir()
    a = stack.influxd_start()
    b = stack.influxd_start()
  end)
  teardown(function() stack.cleanup_all() end)

  it("setup-influx reports each object created / unchanged / differs, on every URL, with a summary", function()
    local cfg = cfg_for({ a.url, b.url })
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 120 })
    assert.are.equal(0, rc, err)
    local created = select(2, out:gsub("\ncreated ", "\n"))
    -- 3 databases, 7 retention policies, 18 continuous queries, per server
    assert.are.equal(2 * 28, created, out)
    assert.truthy(out:find("created   database cache_stats\n", 1, true), out)
    assert.truthy(out:find("created   retention policy cache_stats.daily\n", 1, true), out)
    assert.truthy(out:find("created   continuous query deliveryservice_stats.max_kbps_ds_1day\n", 1, true), out)
    assert.truthy(out:find(a.url .. ": 28 created, 0 unchanged, 0 differ, 0 failed", 1, true), out)
    assert.truthy(out:find(b.url .. ": 28 created, 0 unchanged, 0 differ, 0 failed", 1, true), out)
    assert.falsy(err:find("INFO", 1, true), err)
    -- the second server really has the schema
    local n = 0
    for _, series in ipairs(stack.influx_query(b.url, "SHOW CONTINUOUS QUERIES").results[1].series) do n = n + #(series.values or {}) end
    assert.are.equal(18, n)
    -- again: all unchanged
    rc, out = stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 120 })
    assert.are.equal(0, rc, out)
    assert.truthy(out:find(a.url .. ": 0 created, 28 unchanged, 0 differ, 0 failed", 1, true), out)
    -- an RP with other settings: reported with the ALTER to run, exit 1, nothing changed
    stack.influx_query(a.url, "ALTER RETENTION POLICY daily ON cache_stats DURATION 48h")
    rc, out = stack.run(tstats .. " --config " .. cfg .. " setup-influx --url " .. sq(a.url), { timeout = 120 })
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("differs   retention policy cache_stats.daily  duration 48h0m0s, ATC's 26h; to match run: "
      .. "ALTER RETENTION POLICY daily ON cache_stats DURATION 26h REPLICATION 3 DEFAULT", 1, true), out)
    assert.truthy(out:find(a.url .. ": 0 created, 27 unchanged, 1 differ, 0 failed", 1, true), out)
    assert.falsy(out:find(b.url, 1, true), "--url limits it to one server")
  end)

  it("setup-influx --print prints the statements only; --replication is used and validated", function()
    local cfg = cfg_for({ "http://127.0.0.1:1" })
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " setup-influx --print --replication 2", { timeout = 20 })
    assert.are.equal(0, rc, err)
    local ls = lines_of(out)
    assert.are.equal(28, #ls)
    assert.are.equal("CREATE DATABASE cache_stats;", ls[1])
    assert.are.equal("CREATE RETENTION POLICY daily ON cache_stats DURATION 26h REPLICATION 2 DEFAULT;", ls[2])
    assert.are.equal("", err)
  end)

  it("setup-influx against a dead server: one clear error and exit 1", function()
    local cfg = cfg_for({ "http://127.0.0.1:1" })
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 60 })
    assert.are.equal(1, rc)
    local ls = lines_of(err)
    assert.are.equal(1, #ls, err)
    assert.truthy(ls[1]:find("^tstats setup%-influx: http://127.0.0.1:1: cannot reach InfluxDB: "), err)
    assert.truthy(out:find("http://127.0.0.1:1: NOT set up (unreachable)", 1, true), out)
  end)

  it("rollup names the rollups and CDNs that exist; backfill-cq explains expired raw data", function()
    stack.run(tstats .. " setup-influx --url " .. sq(a.url), { timeout = 120 })
    local t = (os.time() - 3600) * 1000
    stack.influx_write(a.url, "cache_stats", ("bandwidth,cdn=cdn1,hostname=e1,type=EDGE value=10 %d\n"):format(t), "ms", "daily")
    local cfg = cfg_for({ a.url })
    local day = os.date("!%Y-%m-%d", os.time() - 2 * DAY)
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " rollup --from " .. day .. " --to " .. day .. " --rollup nosuch", { timeout = 60 })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find("unknown rollup 'nosuch' (available: daily, ds_daily_max)", 1, true), err)
    assert.falsy(err:find("no file", 1, true), "no module search path: " .. err)
    rc, out, err = stack.run(tstats .. " --config " .. cfg .. " rollup --from " .. day .. " --to " .. day .. " --cdn nosuch", { timeout = 60 })
    assert.are.equal(1, rc, err)
    assert.truthy(err:find("no data for CDN 'nosuch' in cache_stats (CDNs with data: cdn1)", 1, true), err)
    local later = os.date("!%Y-%m-%d", os.time() - DAY)
    rc, _, err = stack.run(tstats .. " --config " .. cfg .. " rollup --from " .. later .. " --to " .. day, { timeout = 60 })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find("--to " .. day .. " is before --from " .. later, 1, true), err)
    -- a window whose raw data is past the 26 h retention
    local old1, old2 = os.date("!%Y-%m-%d", os.time() - 10 * DAY), os.date("!%Y-%m-%d", os.time() - 9 * DAY)
    rc, out, err = stack.run(tstats .. " --config " .. cfg .. " backfill-cq --from " .. old1 .. " --to " .. old2, { timeout = 120 })
    assert.are.equal(1, rc, out .. err)
    assert.truthy(err:find("the raw data of " .. old1 .. ".." .. old2 .. " has expired (", 1, true), err)
    assert.truthy(err:find("%.daily keeps 26h0m0s; nothing older than [%d-]+T[%d:]+Z is left%): nothing to backfill"), err)
  end)

  it("rollup --dry-run and backfill-cq --dry-run print what they would do and write nothing", function()
    local c = stack.influxd_start()
    local cfg = cfg_for({ c.url })
    stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 120 })
    local d0 = (os.time() // DAY - 2) * DAY
    stack.influx_write(c.url, "cache_stats", ("bandwidth.cdn.1min,cdn=cdn1 value=2000000 %d\nbandwidth.cdn.1min,cdn=cdn1 value=1000000 %d\n"):format(d0 + 60, d0 + 120), "s", "monthly")
    local day = os.date("!%Y-%m-%d", d0)
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " rollup --dry-run --from " .. day .. " --to " .. day, { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find(day .. "\tcdn1\tall\tdaily_maxgbps\t2\n", 1, true), out)
    assert.truthy(out:find("nothing written", 1, true), out)
    local r = stack.influx_query(c.url, "SHOW MEASUREMENTS", "daily_stats")
    assert.is_nil(r.results[1].series, "rollup --dry-run wrote to daily_stats")
    local from = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 3 * 3600)
    local to = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 3600)
    stack.influx_write(c.url, "cache_stats", ("bandwidth,cdn=cdn1,hostname=e1,type=EDGE value=5 %d\n"):format(os.time() - 2 * 3600), "s", "daily")
    rc, out, err = stack.run(tstats .. " --config " .. cfg .. " backfill-cq --dry-run --from " .. from .. " --to " .. to, { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find('SELECT sum%(value%) AS "value" INTO "cache_stats"%."monthly"%."bandwidth%.cdn%.1min"'), out)
    assert.truthy(out:find("nothing run", 1, true), out)
    r = stack.influx_query(c.url, 'SELECT count(value) FROM "monthly"./.*/ WHERE time > now() - 5h', "cache_stats")
    assert.is_nil(r.results[1].series, "backfill-cq --dry-run wrote")
  end)

  it("runs built-in scripts by name from any directory, and lists them", function()
    local cfg = cfg_for({ a.url })
    local rc, out, err = stack.run(tstats .. " script --list")
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("\ncdn_report ", 1, true) or out:find("^cdn_report "), out)
    assert.truthy(out:find("reimport_tm_payload", 1, true), out)
    local day = os.date("!%Y-%m-%d", os.time() - 2 * DAY)
    for _, name in ipairs({ "cdn_report", "cdn_report.lua" }) do
      rc, out, err = stack.run(tstats .. " --config " .. cfg .. " script " .. name .. " " .. day .. " " .. day, { timeout = 60, cwd = "/" })
      assert.are.equal(0, rc, name .. ": " .. err)
    end
    rc, _, err = stack.run(tstats .. " --config " .. cfg .. " script cdn_report", { timeout = 60, cwd = "/" })
    assert.are.equal(1, rc, err)
    assert.truthy(err:find("usage: tstats script cdn_report", 1, true), err)
    rc, _, err = stack.run(tstats .. " --config " .. cfg .. " script nosuch", { cwd = "/" })
    assert.are.equal(2, rc)
    assert.truthy(err:find("no file 'nosuch' and no built-in script of that name (built in: cdn_report, reimport_tm_payload, stored)", 1, true), err)
    -- a script's own options pass through untouched
    local s = file("print(table.concat(arg, ' '))")
    rc, out = stack.run(tstats .. " --config " .. cfg .. " script " .. s .. " --bogus -h x")
    assert.are.equal(0, rc)
    assert.are.equal("--bogus -h x\n", out)
  end)

  it("script stored prints points per database and CDN and the daily summaries (scripts/demo's ending)", function()
    local d = stack.tmpdir()
    local c = stack.influxd_start()
    local cfg = cfg_for({ c.url })
    stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 120 })
    local t = os.time() - 600
    stack.influx_write(c.url, "cache_stats", ("bandwidth,cdn=cdn1,hostname=a value=1 %d\nbandwidth,cdn=cdn1,hostname=b value=2 %d\nmaxKbps,cdn=cdn2,hostname=c value=3 %d\n"):format(t, t, t), "s", "daily")
    stack.influx_write(c.url, "deliveryservice_stats", ("kbps,cdn=cdn1,deliveryservice=ds1,cachegroup=total value=5 %d\n"):format(t), "s", "daily")
    local day = (os.time() // DAY - 2) * DAY
    stack.influx_write(c.url, "daily_stats", ("daily_maxgbps,cdn=cdn1,deliveryservice=all value=2.5 %d\n"):format(day), "s", "indefinite")
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " script stored", { timeout = 60, cwd = d })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("\n  cache_stats.daily%s+cdn1%s+2%s+1\n"), out)
    assert.truthy(out:find("\n  cache_stats.daily%s+cdn2%s+1%s+1\n"), out)
    assert.truthy(out:find("\n  deliveryservice_stats.daily%s+cdn1%s+1%s+1\n"), out)
    assert.truthy(out:find("4 points in all", 1, true), out)
    assert.truthy(out:find("\n  " .. os.date("!%Y%%-%m%%-%d", day) .. "%s+cdn1%s+all%s+daily_maxgbps%s+2.5\n"), out)
    assert.falsy(out:find('"results"', 1, true), "raw JSON")
    local demo = stack.read_file(stack.root() .. "/scripts/demo")
    assert.truthy(demo:find("script stored", 1, true), "scripts/demo ends with the readable summary")
    assert.falsy(demo:find("curl -sG", 1, true), "scripts/demo prints raw JSON")
  end)

  it("config --print-default writes a commented starting configuration that check accepts", function()
    local rc, out, err = stack.run(tstats .. " config --print-default")
    assert.are.equal(0, rc, err)
    local path = file(out)
    local _, opts = stack.run(tstats .. " options")
    for key in ("\n" .. opts):gmatch("\n| `([%w_.]+)` |") do
      local name = key:match("%.(.+)$") or key
      assert.truthy(out:find("\n%s*%-?%-? ?" .. name:gsub("_", "_") .. " = "), key)
    end
    rc, out, err = stack.run(tstats .. " --config " .. path .. " check")
    assert.are.equal(0, rc, err)
    assert.truthy(out:find('traffic_ops.url%s+= "https://'), out)
    rc = stack.run(tstats .. " config")
    assert.are.equal(2, rc)
  end)
end)
