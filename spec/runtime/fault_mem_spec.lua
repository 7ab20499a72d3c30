-- fault_mem_spec.lua: fault 3 of the fault suite (test side). influxd down far longer than
-- influxdb.max_buffer_bytes could hold in memory, with the durable spool on: the daemon's RSS
-- stays under the bound plus a fixed overhead while the spool grows past it many times, and
-- after influxd is back every polled point is stored exactly once (counts, and values read
-- from the simulator by curl during the outage compared point by point with what InfluxDB holds).
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

local tstats_bin = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")
local influxd_sh = stack.root() .. "/scripts/lib/influxd.sh"

local MAX_BUFFER = 256 * 1024          -- influxdb.max_buffer_bytes of the run
-- What the daemon may add to its pre-outage RSS on top of the bound: the writer's in-flight
-- chunks (max_inflight + 1 of them, read back from the spool) and allocator slack. Stated
-- here, printed, and the point of the test: without the spool the backlog itself (the spool's
-- size, tens of MB) would be in memory.
local FIXED_OVERHEAD = 12 * 1024 * 1024
local OUTAGE_S = 15

local function kb(pid, key)
  local s = stack.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match(key .. ":%s*(%d+)")) or 0
end

local polled, stored = stack.polled, stack.stored

local function spool_bytes(dir)
  local _, out = stack.run("du -sb " .. q(dir) .. " 2>/dev/null | cut -f1")
  return tonumber(out) or 0
end

describe("fault suite: influxd down longer than the memory bound", function()
  teardown(function() stack.cleanup_all() end)

  it("3. RSS stays bounded, the spool grows, every point arrives exactly once", function()
    local influx = stack.influxd_start_atc()
    local tmp = stack.tmpdir()
    local ready = tmp .. "/ready.json"
    -- 100 caches: ~4,000 cache points a poll, ~0.4 MB of line protocol, so the outage's backlog
    -- is ~30 times max_buffer_bytes. --poll-ms 250: no sample time repeats between polls.
    local sim = stack.spawn("exec " .. sim_bin .. " --ready-file " .. q(ready)
      .. " --cdns 1 --caches 100 --ds 3 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250", tmp .. "/sim.log")
    assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05))
    local info = cjson.decode(stack.read_file(ready))
    local cfg = tmp .. "/config.lua"
    stack.write_file(cfg, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q }, timeout = 2, max_buffer_bytes = %d },
  polling_interval = 1, publishing_interval = 1, config_interval = 300,
  state_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
}]]):format(info.to_url, influx.url, MAX_BUFFER, tmp .. "/state"))
    local log = tmp .. "/tstats.log"
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(stack.wait_until(function() return (stack.read_file(log) or ""):find("Sent %d+ stats") end, 60, 0.2),
      stack.read_file(log))
    stack.sleep(3)
    local rss_before = kb(d.pid, "VmHWM")
    local polled_before = polled(log)
    os.execute(q(influxd_sh) .. " stop " .. q(influx.dir) .. " >/dev/null 2>&1")
    -- During the outage: the daemon's RSS every 0.5 s, and the simulator's own answers for
    -- one cache (hc=5: the last 5 sample times) as reference values, keyed by sample time.
    local mon = info.monitors[1].url
    local want = {}      -- time ms -> value of ats.proxy.process.http.transaction_counts...? (below)
    local stat = "bandwidth"
    local host = "edge-cdn1-1"
    local peak_rss = 0
    local t_end = stack.now() + OUTAGE_S
    while stack.now() < t_end do
      peak_rss = math.max(peak_rss, kb(d.pid, "VmRSS"))
      local rc, body = stack.run("curl -sS -m 5 " .. q(mon .. "/publish/CacheStats/" .. host .. "?hc=5&stats=" .. stat))
      if rc == 0 then
        local ok, j = pcall(cjson.decode, body)
        for _, e in ipairs(ok and j.caches and j.caches[host] and j.caches[host][stat] or {}) do
          want[math.tointeger(e.time)] = tonumber(e.value)
        end
      end
      stack.sleep(0.5)
    end
    local during = polled(log)
    local spooled = spool_bytes(tmp .. "/state/spool")
    peak_rss = math.max(peak_rss, kb(d.pid, "VmRSS"))
    local rc, _, err = stack.run(q(influxd_sh) .. " start " .. q(influx.dir),
      { env = { TS_INFLUX_PORT = tostring(influx.port) }, timeout = 90 })
    assert(rc == 0, "influxd restart failed: " .. err)
    -- the backlog (everything polled by the restart) stored, then live polls a few seconds more
    local t_back = stack.now()
    local ok = stack.wait_until(function() return stored(influx.url) >= during end, 180, 1)
    local catchup_s = stack.now() - t_back
    stack.sleep(3)
    local hwm = kb(d.pid, "VmHWM")
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p, s = polled(log), stored(influx.url)
    -- no point twice: every (series, time) once, i.e. the distinct keys equal the count
    local distinct = 0
    for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
      local r = stack.influx_query(influx.url, 'SELECT value FROM "daily"./.*/ GROUP BY *', db, { epoch = "ms" })
      local seen = {}
      for _, sr in ipairs(r and r.results and r.results[1] and r.results[1].series or {}) do
        local tags = {}
        for k, v in pairs(sr.tags or {}) do tags[#tags + 1] = k .. "=" .. tostring(v) end
        table.sort(tags)
        for _, v in ipairs(sr.values) do
          local key = sr.name .. " " .. table.concat(tags, ",") .. " " .. tostring(math.tointeger(v[1]))
          if not seen[key] then seen[key] = true; distinct = distinct + 1 end
        end
      end
    end
    -- spot values: the simulator's answers during the outage against what InfluxDB holds
    local r = stack.influx_query(influx.url, ('SELECT value FROM "daily"."%s" WHERE hostname = \'%s\''):format(stat, host),
      "cache_stats", { epoch = "ms" })
    local have = {}
    for _, v in ipairs(stack.influx_rows(r)) do have[math.tointeger(v.time)] = v.value end
    local compared, mismatched, missing, nwant = 0, 0, 0, 0
    for t, v in pairs(want) do
      nwant = nwant + 1
      if have[t] == nil then missing = missing + 1
      else
        compared = compared + 1
        if math.abs(have[t] - v) > 1e-9 * math.max(1, math.abs(v)) then mismatched = mismatched + 1 end
      end
    end
    local bound_kb = rss_before + (MAX_BUFFER + FIXED_OVERHEAD) // 1024
    print(("fault 3: influxd down %d s with max_buffer_bytes %d; spool %d bytes at the restart (%.0fx the bound); "
      .. "RSS before the outage (peak) %d kB, peak during it %d kB, peak of the run %d kB, bound %d kB "
      .. "(before + max_buffer_bytes + %d MiB fixed); polled %d (%d by the restart, %d during the outage) stored %d distinct %d lost %d; "
      .. "spot values of %s %s: %d sample times seen by curl during the outage, %d in InfluxDB, %d differ, "
      .. "%d not stored (polls ran between curl's); the backlog was stored %.1f s after the restart")
      :format(OUTAGE_S, MAX_BUFFER, spooled, spooled / MAX_BUFFER, rss_before, peak_rss, hwm, bound_kb,
        FIXED_OVERHEAD // 1048576, p, during, during - polled_before, s, distinct, p - s, host, stat, nwant, compared, mismatched, missing, catchup_s))
    assert.truthy(ok, "the backlog never arrived: polled " .. during .. " by the restart, stored " .. s)
    assert.are.equal(p, s)
    assert.are.equal(s, distinct)
    -- The spool's compact records take ~1/10 of the line protocol they stand for, so its bytes are
    -- compared with the bound only loosely; what matters is that the outage's points, as the line
    -- protocol the memory buffer would have held (>= 60 bytes a point), did not fit in the bound.
    assert.truthy(spooled > 2 * MAX_BUFFER, "the spool held the backlog: " .. spooled)
    assert.truthy((during - polled_before) * 60 > 10 * MAX_BUFFER,
      ("the outage's %d points fit in the memory bound: the test shows nothing"):format(during - polled_before))
    assert.truthy(hwm <= bound_kb, ("peak RSS %d kB over the bound %d kB"):format(hwm, bound_kb))
    assert.truthy(compared >= 10, "spot values compared: " .. compared)
    assert.are.equal(0, mismatched)
    sim:stop()
    influx:stop()
  end)
end)
