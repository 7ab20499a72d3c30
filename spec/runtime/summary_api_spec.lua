-- Runtime spec: the daily summary's "api" sink (POST /api/5.0/stats_summary to
-- Traffic Ops, for sites that forbid direct database access) against the
-- simulator's Traffic Ops, with the golden series in a real influxd: exact
-- values, ATC's body shape, one login, and a rerun that posts nothing twice.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local DAY = 86400
local q = stack.quote

describe("daily summary api sink #asan", function()
  local influx, sim, dir, cfgfile, to_url
  local D = (os.time() - 600) // DAY * DAY - 2 * DAY
  local Ddate = os.date("!%Y-%m-%d", D)

  local function tstats(args)
    return stack.run(q(stack.bin("tstats")) .. " --config " .. q(cfgfile) .. " " .. args, { timeout = 120 })
  end

  local function to_get(path)
    local jar = dir .. "/jar"
    local rc = stack.run(("curl -sS -m 10 -c %s -b %s -XPOST -d '{\"u\":\"admin\",\"p\":\"twelve12\"}' %s"):format(
      q(jar), q(jar), q(to_url .. "/api/5.0/user/login")))
    assert.are.equal(0, rc)
    local rc2, out = stack.run(("curl -sS -m 10 -b %s %s"):format(q(jar), q(to_url .. path)))
    assert.are.equal(0, rc2)
    return cjson.decode(out)
  end

  local function sim_stats()
    local _, out = stack.run("curl -sS -m 10 " .. q(to_url .. "/sim/stats"))
    return cjson.decode(out)
  end

  setup(function()
    influx = stack.influxd_start_atc()
    dir = stack.tmpdir()
    sim = stack.sim_start("--cdns 1 --caches 2", { dir = dir })
    to_url = sim.to_url
    cfgfile = dir .. "/config.lua"
    stack.write_file(cfgfile, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12" },
  influxdb = { urls = { %q } },
  state_dir = %q,
  summary = { sinks = { "api" }, rollups = { "daily" } },
}
]]):format(to_url, influx.url, dir))
    local lines = {
      ("bandwidth.cdn.1min,cdn=cdn-a value=1000000 %d"):format(D),          -- 00:00 counts
      ("bandwidth.cdn.1min,cdn=cdn-a value=3000000 %d"):format(D + 3600),   -- the max, 3 Gbps
      ("bandwidth.cdn.1min,cdn=cdn-a value=9000000 %d"):format(D + DAY),    -- next day: not counted
    }
    local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    assert.are.equal(204, st, body)
  end)
  teardown(function() stack.cleanup_all() end)

  it("posts both daily stats once, in ATC's shape, and a rerun posts nothing again", function()
    local rc, _, err = tstats("rollup --from " .. Ddate .. " --to " .. Ddate)
    assert.are.equal(0, rc, err)
    local doc = to_get("/api/5.0/stats_summary?cdnName=cdn-a")
    local got = {}
    for _, r in ipairs(doc.response) do
      if r.statDate == Ddate or (r.statDate or ""):sub(1, 10) == Ddate then got[r.statName] = r end
    end
    -- max = 3e6 kbps = 3 Gbps; bytes = (1e6 + 3e6) kbps x 60 s / 8 = 3e7 kB, / 1e9 = 0.03 TB
    assert.are.equal(3, got.daily_maxgbps.statValue)
    assert.are.equal(0.03, got.daily_bytesserved.statValue)
    assert.are.equal("all", got.daily_maxgbps.deliveryServiceName)
    local posts = sim_stats().to.stats_summary_post
    assert.are.equal(2, posts)
    rc, _, err = tstats("rollup --from " .. Ddate .. " --to " .. Ddate)
    assert.are.equal(0, rc, err)
    assert.are.equal(2, sim_stats().to.stats_summary_post, "the rerun found the rows and posted nothing")
    assert.truthy(sim_stats().to.logins <= 4, "one login per run at most (plus this spec's own)")
  end)
end)
