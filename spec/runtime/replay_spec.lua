-- replay_spec.lua: live points never wait behind a replayed backlog (test side). The real
-- tstats daemon against the simulator and a real influxd 1.6.7: influxd is stopped long
-- enough for a backlog that takes many seconds to replay at a low spool.replay_rate, then
-- restarted; a point polled after the restart must be in InfluxDB while the backlog is
-- still being replayed (order and presence, no speed); then kill -9 mid-replay and a restart:
-- in the end every polled point is stored, once. /metrics during the replay: live records
-- answered ahead of the backlog leave tstats_spool_backlog_bytes below tstats_spool_replay_bytes.
local stack = require "spec.runtime.stack"
local q = stack.quote

local tstats_bin = stack.bin("tstats")
local influxd_sh = stack.root() .. "/scripts/lib/influxd.sh"
local polled = stack.polled

local influx, tmp

-- count of stored points, and the newest point time (epoch ms) over the raw RPs of both databases
local function stored() return stack.stored(influx.url), stack.newest_ms(influx.url) end

-- the two spool gauges of /metrics (bytes not acknowledged; from the durable position on)
local function spool_gauges(base)
  local rc, out = stack.run("curl -sS -m 5 " .. q(base .. "/metrics"))
  if rc ~= 0 then return nil end
  local b = tonumber(out:match("\ntstats_spool_backlog_bytes (%S+)"))
  local r = tonumber(out:match("\ntstats_spool_replay_bytes (%S+)"))
  local tb = tonumber(out:match('\ntstats_spool_target_backlog_bytes{target="influxdb"} (%S+)'))
  local tr = tonumber(out:match('\ntstats_spool_target_replay_bytes{target="influxdb"} (%S+)'))
  return b and r and tb and tr and { backlog = b, replay = r, tbacklog = tb, treplay = tr }
end

describe("replay of the spool beside live points", function()
  local sim
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
    -- 200 caches x 40 stats: ~8,000 points a poll; --poll-ms 250: no sample time repeats
    sim = stack.sim_start("--cdns 1 --caches 200 --ds 3 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250")
  end)
  teardown(function() stack.cleanup_all() end)

  it("sends a live point of a poll after the outage while the backlog is still replayed", function()
    local port = stack.free_port()
    local cfg = stack.write_config(tmp .. "/config.lua", {
      to_url = sim.to_url, influx_url = influx.url, influx_extra = "timeout = 2", config_interval = 300,
      state_dir = tmp .. "/state",
      extra = ("http = { listen = \"127.0.0.1:%d\" }, "):format(port) .. "spool = { replay_rate = 1000 }, shutdown_timeout = 3,   -- what is left stays in the spool",
    })
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/tstats.log")
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(stack.wait_until(function() return (stack.read_file(d.log) or ""):find("Sent %d+ stats") end, 30, 0.1),
      stack.read_file(d.log))
    -- everything of the first polls is stored before the outage starts
    local p0 = polled(d.log)
    assert(stack.wait_until(function() return stored() >= p0 end, 30, 0.2), "first polls not stored")
    os.execute(q(influxd_sh) .. " stop " .. q(influx.dir) .. " >/dev/null 2>&1")
    stack.sleep(5)
    local rc, _, err = stack.run(q(influxd_sh) .. " start " .. q(influx.dir),
      { env = { TS_INFLUX_PORT = tostring(influx.port) }, timeout = 90 })
    assert(rc == 0, "influxd restart failed: " .. err)
    local t_up = stack.now()
    local backlog = polled(d.log)   -- polled by the restart: stored before, or in the backlog
    -- a point sampled after the restart reaches InfluxDB while the backlog is not all there
    local live_at, n_then, gauges
    local base = "http://127.0.0.1:" .. port
    stack.wait_until(function()
      local n, newest = stored()
      if newest > t_up * 1000 and not live_at then live_at, n_then = stack.now() - t_up, n end
      -- live records answered while older backlog records wait: counted out of the backlog only
      local g = live_at and spool_gauges(base)
      if g and g.backlog > 0 and g.backlog < g.replay then gauges = g end
      return live_at and (gauges or stack.now() - t_up > 20)
    end, 20, 0.2)
    -- kill -9 in the middle of the replay: claimed live records and the backlog not yet
    -- acknowledged are read again by the next start, which replays at the default rate
    assert.truthy(live_at, "no point sampled after the restart was stored within 20 s")
    assert.truthy(gauges, "no scrape during the replay showed 0 < backlog_bytes < replay_bytes: "
      .. tostring(select(2, stack.run("curl -sS -m 5 " .. q(base .. "/metrics") .. " | grep spool_"))))
    assert.are.equal(gauges.backlog, gauges.tbacklog, "one InfluxDB target: the global gauge is its own")
    assert.are.equal(gauges.replay, gauges.treplay)
    print(("replay: /metrics during the replay: tstats_spool_backlog_bytes %d, tstats_spool_replay_bytes %d")
      :format(gauges.backlog, gauges.replay))
    local n_kill = stack.stored(influx.url)
    local t_kill = stack.now() - t_up
    d:kill("KILL")
    d:wait(10)
    local p1 = polled(d.log)
    local cfg2 = tmp .. "/config2.lua"
    local src = stack.read_file(cfg):gsub("spool = { replay_rate = 1000 }", "spool = {}")
    stack.write_file(cfg2, src)
    local d2 = stack.spawn(tstats_bin .. " --config " .. q(cfg2) .. " run", tmp .. "/tstats2.log")
    finally(function() if d2:alive() then d2:kill("KILL"); d2:wait(10) end end)
    assert(stack.wait_until(function() return polled(d2.log) > 0 end, 30, 0.1), stack.read_file(d2.log))
    -- everything the killed run polled and what the second one polls by the check
    local ok = stack.wait_until(function() return stack.stored(influx.url) >= p1 + polled(d2.log) end, 60, 0.5)
    local done_s = stack.now() - t_up
    local rc_stop = d2:stop()
    if rc_stop ~= 0 then print(((stack.read_file(d2.log) or ""):gsub("[^\n]*Collected[^\n]*\n", ""):sub(-3000))) end
    assert.are.equal(0, rc_stop, "SIGTERM: exit 0")
    local s, p2 = stack.stored(influx.url), polled(d2.log)
    print(("replay: %d points polled by influxd's restart; a point sampled after it stored %.1f s later, when %s "
      .. "points were stored; kill -9 %.1f s after the restart with %d of %d polled stored; restart: all stored "
      .. "%.1f s after influxd's restart; at the end %d stored of %d polled (%d + %d)")
      :format(backlog, live_at or -1, tostring(n_then), t_kill, n_kill, p1, done_s, s, p1 + p2, p1, p2))
    assert.truthy(n_then < backlog, "the backlog was already replayed: the test shows nothing (" .. n_then .. ")")
    assert.truthy(n_kill < p1, "everything was stored before the kill: the restart shows nothing")
    assert.truthy(ok, "not everything arrived after the restart")
    assert.are.equal(p1 + p2, s, "every polled point stored once")
  end)
end)
