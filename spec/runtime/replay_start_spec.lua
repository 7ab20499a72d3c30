-- replay_start_spec.lua: a backlog found in the spool at start is replayed at once, not at the
-- first publishing tick (test side). The real tstats daemon against the simulator and a real
-- influxd 1.6.7: a first run polls with InfluxDB unreachable (everything stays in the spool),
-- a second run starts with publishing_interval = 3600 and a reachable influxd: the first run's
-- points must be stored within seconds, long before any publishing tick.
local stack = require "spec.runtime.stack"
local q = stack.quote

local tstats_bin = stack.bin("tstats")

local polled = stack.polled

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

describe("a spool backlog at start", function()
  local influx, tmp, sim
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
    -- --payload-cache-ms 0 --poll-ms 250: no sample time repeats between polls a second apart
    sim = stack.sim_start("--cdns 1 --caches 50 --ds 2 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250")
  end)
  teardown(function() stack.cleanup_all() end)

  it("is replayed at once, not at the first publishing tick", function()
    local conf = [[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q }, timeout = 2 },
  polling_interval = 1, publishing_interval = %d, config_interval = 300,
  state_dir = %q,
  collect = { timeout = 0.9, connect_timeout = 0.5 },
  summary = { enabled = false },
  shutdown_timeout = 2,   -- what is left stays in the spool
}
]]
    -- run 1: InfluxDB on a port nobody listens on
    local dead = "http://127.0.0.1:" .. stack.free_port()
    write(tmp .. "/c1.lua", conf:format(sim.to_url, dead, 1, tmp .. "/state"))
    local d1 = stack.spawn(tstats_bin .. " --config " .. q(tmp .. "/c1.lua") .. " run", tmp .. "/t1.log")
    finally(function() if d1:alive() then d1:kill("KILL"); d1:wait(10) end end)
    assert(stack.wait_until(function() return polled(d1.log) > 0 end, 30, 0.1), stack.read_file(d1.log))
    stack.sleep(3)
    assert.are.equal(0, d1:stop(), "run 1: SIGTERM: exit 0")
    local p1 = polled(d1.log)
    assert.are.equal(0, stack.stored(influx.url), "nothing reached InfluxDB in run 1")

    -- run 2: the real influxd, a publishing tick at most once an hour
    write(tmp .. "/c2.lua", conf:format(sim.to_url, influx.url, 3600, tmp .. "/state"))
    local t0 = stack.now()
    local d2 = stack.spawn(tstats_bin .. " --config " .. q(tmp .. "/c2.lua") .. " run", tmp .. "/t2.log")
    finally(function() if d2:alive() then d2:kill("KILL"); d2:wait(10) end end)
    local ok = stack.wait_until(function() return stack.stored(influx.url) >= p1 end, 20, 0.2)
    local took = stack.now() - t0
    local s = stack.stored(influx.url)
    d2:kill("KILL")
    d2:wait(10)
    print(("replay at start: %d points polled by run 1 (InfluxDB unreachable); run 2 (publishing_interval 3600) "
      .. "stored %d of them %.1f s after its start"):format(p1, s, took))
    if not ok then
      print(((stack.read_file(d1.log) or ""):gsub("[^\n]*Collected[^\n]*\n", ""):sub(-2500)))
      print(((stack.read_file(d2.log) or ""):gsub("[^\n]*Collected[^\n]*\n", ""):sub(-2500)))
    end
    assert.truthy(ok, "the backlog was not replayed within 20 s of the start: " .. s .. " of " .. p1 .. " stored")
    assert.are.equal(p1, s, "the backlog stored once")
  end)
end)
