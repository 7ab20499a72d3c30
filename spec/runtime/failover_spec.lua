-- Runtime spec: Traffic Monitor failover remembers the monitor that answered,
-- so a hung monitor costs at most the first timeslot, not every other one; a
-- SIGHUP keeps the Traffic Ops session; a corrupt last-good Traffic Ops file
-- is said, not ignored.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("monitor failover", function()
  teardown(function() stack.cleanup_all() end)

  it("starts each poll at the monitor that answered last: one hung monitor of two costs one timeslot at most", function()
    local sim = stack.sim_start("--cdns 1 --caches 3 --ds 1 --monitors-per-cdn 2 --fault hang@cdn1:0")
    local dir = sim.dir
    -- a timeout longer than the polling interval: starting at monitor 0 every
    -- time would skip every other timeslot (the previous poll still running)
    local cfg = stack.write_config(dir .. "/config.lua", { to_url = sim.to_url, influx_url = "http://127.0.0.1:1",
      publishing = 3600, state_dir = dir .. "/state", collect = "timeout = 1.5, connect_timeout = 1" })
    local ts = stack.spawn("exec " .. tstats .. " --config " .. cfg .. " run", dir .. "/tstats.log")
    assert.truthy(stack.wait_until(function()
      local _, n = (stack.read_file(dir .. "/tstats.log") or ""):gsub("Collected %d+ cache stats", "")
      return n >= 6
    end, 40, 0.2), stack.read_file(dir .. "/tstats.log"))
    ts:kill("TERM")
    ts:wait(30)
    local log = stack.read_file(dir .. "/tstats.log")
    local _, skipped = log:gsub("CacheStats: previous poll still running; skipping this timeslot", "")
    local _, hung = log:gsub("failed to get cdn1 CacheStats: ", "")
    assert.truthy(skipped <= 1, "timeslots skipped: " .. skipped .. "\n" .. log)
    assert.are.equal(1, hung, "the hung monitor is tried once, then the good one is used\n" .. log)
    sim:stop()
  end)

  local function start_sim(args)
    local sim = stack.sim_start(args)
    return sim, sim.to_url, sim.dir
  end

  local function config(dir, to_url, extra)
    return stack.write_config(dir .. "/config-" .. tostring(math.random(1e9)) .. ".lua", { to_url = to_url, to_timeout = 2,
      influx_url = "http://127.0.0.1:1", publishing = 3600, state_dir = dir .. "/state",
      collect = "timeout = 0.5, connect_timeout = 0.5", extra = extra })
  end

  it("keeps its Traffic Ops session across SIGHUP (no login per reload)", function()
    local sim, to_url, dir = start_sim("--cdns 1 --caches 2")
    local cfg = config(dir, to_url)
    local ts = stack.spawn("exec " .. tstats .. " --config " .. cfg .. " run", dir .. "/tstats.log")
    local function log() return stack.read_file(dir .. "/tstats.log") or "" end
    local function count(pat) return select(2, log():gsub(pat, "")) end
    assert.truthy(stack.wait_until(function() return count("Collected %d+ cache stats") >= 1 end, 20, 0.2), log())
    for i = 1, 2 do
      ts:kill("HUP")
      assert.truthy(stack.wait_until(function() return count("plan: %d+ endpoints") >= i + 1 end, 20, 0.2), log())
    end
    ts:kill("TERM")
    ts:wait(30)
    assert.are.equal(1, count("logged in to Traffic Ops"), log())
    sim:stop()
  end)

  it("says so when the last good Traffic Ops file is corrupt, and counts it", function()
    local dir = stack.tmpdir()
    os.execute("mkdir -p " .. sq(dir .. "/state"))
    local f = assert(io.open(dir .. "/state/traffic_ops_last_good.json", "w"))
    f:write('{"version":1,"servers":[{"hostName":')   -- torn
    f:close()
    local cfg = config(dir, "http://127.0.0.1:" .. stack.free_port())
    local rc, _, err = stack.run(tstats .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("the last good Traffic Ops data cannot be used: plan.load: ", 1, true), err)
    assert.truthy(err:find("invalid JSON", 1, true), err)
  end)
end)
