-- Runtime spec: Traffic Monitor failover remembers the monitor that answered,
-- so a hung monitor costs at most the first timeslot, not every other one; a
-- SIGHUP keeps the Traffic Ops session; a corrupt last-good Traffic Ops file
-- is said, not ignored.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")
local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("monitor failover", function()
  teardown(function() stack.cleanup_all() end)

  it("starts each poll at the monitor that answered last: one hung monitor of two costs one timeslot at most", function()
    local dir = stack.tmpdir()
    local ready = dir .. "/ready.json"
    local sim = stack.spawn("exec " .. sim_bin .. " --ready-file " .. sq(ready) ..
      " --cdns 1 --caches 3 --ds 1 --monitors-per-cdn 2 --fault hang@cdn1:0", dir .. "/sim.log")
    assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05),
      stack.read_file(dir .. "/sim.log"))
    local to_url = cjson.decode(stack.read_file(ready)).to_url
    local cfg = dir .. "/config.lua"
    local f = assert(io.open(cfg, "w"))
    -- a timeout longer than the polling interval: starting at monitor 0 every
    -- time would skip every other timeslot (the previous poll still running)
    f:write(([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  polling_interval = 1, publishing_interval = 3600,
  state_dir = %q,
  collect = { timeout = 1.5, connect_timeout = 1 },
  summary = { enabled = false },
}]]):format(to_url, dir .. "/state"))
    f:close()
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
    local dir = stack.tmpdir()
    local ready = dir .. "/ready.json"
    local sim = stack.spawn("exec " .. sim_bin .. " --ready-file " .. sq(ready) .. " " .. args, dir .. "/sim.log")
    assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05))
    return sim, cjson.decode(stack.read_file(ready)).to_url, dir
  end

  local function config(dir, to_url, extra)
    local path = dir .. "/config-" .. tostring(math.random(1e9)) .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 2 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  polling_interval = 1, publishing_interval = 3600,
  state_dir = %q,
  collect = { timeout = 0.5, connect_timeout = 0.5 },
  summary = { enabled = false },
  %s
}]]):format(to_url, dir .. "/state", extra or ""))
    f:close()
    return path
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
