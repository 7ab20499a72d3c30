-- valgrind_spec.lua: the runtime smoke test under valgrind memcheck (test side). `tstats run`
-- against the simulator and a real influxd for a few polls, then SIGTERM: memcheck must report
-- no error and no definitely lost block (--error-exitcode makes either fail the exit code), the
-- daemon exits 0 and the polled points are stored. No suppression file: none was needed.
local stack = require "spec.runtime.stack"
local q = stack.quote

local function have_valgrind() return os.execute("command -v valgrind >/dev/null 2>&1") == true end

describe("runtime smoke under valgrind memcheck", function()
  teardown(function() stack.cleanup_all() end)

  it("tstats run: a few polls and publishes, SIGTERM, no memcheck error, no leak", function()
    assert.truthy(have_valgrind(), "valgrind is not installed (scripts/deps installs it)")
    local influx = stack.influxd_start_atc()
    local tmp = stack.tmpdir()
    local sim = stack.sim_start("--cdns 1 --caches 5 --ds 2 --payload-cache-ms 0 --poll-ms 250", { dir = tmp })
    local to_url = sim.to_url
    local cfg = tmp .. "/config.lua"
    stack.write_file(cfg, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 10 },
  influxdb = { urls = { %q }, timeout = 10 },
  polling_interval = 1, publishing_interval = 1, shutdown_timeout = 30,
  state_dir = %q,
  collect = { timeout = 5, connect_timeout = 2 },
  summary = { enabled = false },
}]]):format(to_url, influx.url, tmp .. "/state"))
    local vlog = tmp .. "/memcheck.log"
    local log = tmp .. "/tstats.log"
    local d = stack.spawn("exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full "
      .. "--show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=30 --log-file=" .. q(vlog)
      .. " " .. q(stack.bin("tstats")) .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    local t0 = stack.now()
    assert(stack.wait_until(function() return (stack.read_file(log) or ""):find("Sent %d+ stats") end, 90, 0.5),
      stack.read_file(log))
    stack.sleep(4)
    d:kill("TERM")
    local rc = d:wait(90)
    local secs = stack.now() - t0
    local text, vg = stack.read_file(log) or "", stack.read_file(vlog) or ""
    local polled = 0
    for n in text:gmatch("Collected (%d+) [%w ]- values for") do polled = polled + tonumber(n) end
    local stored = 0
    for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
      local r = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"./.*/', db)
      for _, s in ipairs(r and r.results and r.results[1] and r.results[1].series or {}) do stored = stored + s.values[1][2] end
    end
    local summary = vg:match("ERROR SUMMARY: [^\n]*") or "(no summary)"
    local definite = vg:match("definitely lost: ([%d,]+ bytes in [%d,]+ blocks)") or "(none reported)"
    print(("valgrind smoke: %.1f s under memcheck, exit %s, %d points polled, %d stored; %s; definitely lost: %s")
      :format(secs, tostring(rc), polled, stored, summary, definite))
    assert.are.equal(0, rc, "exit code (99 = memcheck found errors):\n" .. vg)
    assert.truthy(summary:find("^ERROR SUMMARY: 0 errors"), vg)
    assert.truthy(polled > 0)
    assert.are.equal(polled, math.tointeger(stored) or stored)
    sim:stop()
    influx:stop()
  end)
end)
