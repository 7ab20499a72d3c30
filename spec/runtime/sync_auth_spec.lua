-- Runtime spec: `tstats sync` credentials come from the environment
-- (SYNC_SOURCE_* / SYNC_TARGET_*), one pair per side, against real influxd
-- instances with authentication on; a refused login is a counted failure.
local stack = require "spec.runtime.stack"
local q = stack.quote

describe("tstats sync credentials #asan", function()
  local tstats = stack.bin("tstats")
  local A, C, tmp
  local SU, SP = "src-admin", "src-pw-1"
  local TU, TP = "tgt-admin", "tgt-pw-2"

  local function iq(h, text, db, auth)
    local res, status, body = stack.influx_query(h.url, text, db, auth and { user = auth[1], password = auth[2] } or nil)
    assert(status == 200, body)
    return res.results[1].series or {}
  end

  setup(function()
    A = stack.influxd_start({ auth = { user = SU, password = SP } })
    C = stack.influxd_start({ auth = { user = TU, password = TP } })
    tmp = stack.tmpdir()
    for _, h in ipairs({ { A, SU, SP }, { C, TU, TP } }) do
      iq(h[1], "CREATE DATABASE daily_stats", nil, { h[2], h[3] })
      iq(h[1], "CREATE RETENTION POLICY indefinite ON daily_stats DURATION INF REPLICATION 1 DEFAULT", nil, { h[2], h[3] })
    end
    local lines = {}
    local day = (os.time() // 86400 - 5) * 86400
    for i = 0, 3 do
      lines[#lines + 1] = ("daily_maxgbps,cdn=cdn%d,deliveryservice=all value=%d.25 %d"):format(i % 2, 10 + i, day + i * 86400)
    end
    local st, body = stack.influx_write(A.url, "daily_stats", table.concat(lines, "\n") .. "\n", "s", "indefinite",
      { user = SU, password = SP })
    assert(st == 204, body)
  end)
  teardown(function() stack.cleanup_all() end)

  local function sync(env)
    return stack.run(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(C.url) .. " --database daily_stats"
      .. " --state-dir " .. q(tmp .. "/state"), { timeout = 60, env = env })
  end

  it("refuses without the target's credentials (exit 1, no password shown)", function()
    local rc, out, err = sync({ SYNC_SOURCE_USER = SU, SYNC_SOURCE_PASSWORD = SP })
    assert.are.equal(1, rc, out .. err)
    assert.truthy(err:find("HTTP 401", 1, true), err)
    assert.falsy((out .. err):find(SP, 1, true), "no password in the output")
  end)

  it("copies with each side's credentials from the environment", function()
    local rc, out, err = sync({ SYNC_SOURCE_USER = SU, SYNC_SOURCE_PASSWORD = SP, SYNC_TARGET_USER = TU,
      SYNC_TARGET_PASSWORD = TP })
    assert.are.equal(0, rc, out .. err)
    assert.truthy(out:find("4 points read, 4 written", 1, true), out)
    local rows = iq(C, 'SELECT value FROM "indefinite"."daily_maxgbps" GROUP BY cdn', "daily_stats", { TU, TP })
    assert.are.equal(2, #rows)
    assert.are.equal(10.25, rows[1].values[1][2])
    assert.falsy((out .. err):find(TP, 1, true))
  end)
end)
