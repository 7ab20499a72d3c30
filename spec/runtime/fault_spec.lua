-- fault_spec.lua: the fault suite of the durable spool (test side). The real tstats daemon
-- against the simulator and a real influxd 1.6.7: InfluxDB stopped for several polls, kill -9
-- with a non-empty spool, a torn and a corrupted spool segment. Each test prints what it did
-- and what it counted, and passes only if every point a poll accepted is in InfluxDB (exactly:
-- InfluxDB keeps one point per series and time, so a resend is not a second point).
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

local tstats_bin = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")
local influxd_sh = stack.root() .. "/scripts/lib/influxd.sh"

local influx, tmp

local function start_sim(args)
  local dir = stack.tmpdir()
  local ready = dir .. "/ready.json"
  local h = stack.spawn("exec " .. sim_bin .. " --ready-file " .. q(ready) .. " " .. (args or ""), dir .. "/sim.log")
  assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05),
    "simulator did not start: " .. tostring(stack.read_file(dir .. "/sim.log")))
  h.info = cjson.decode(stack.read_file(ready))
  h.to_url = h.info.to_url
  return h
end

local function write_config(name, to_url, extra)
  local path = tmp .. "/config-" .. name .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q }, timeout = 2 },
  polling_interval = 1, publishing_interval = 1, config_interval = 300,
  state_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  %s
}
]]):format(to_url, influx.url, tmp .. "/state-" .. name, extra or ""))
  f:close()
  return path
end

-- Points the daemon accepted: the sum of its "Collected N ... values" lines.
local function polled(log)
  local n = 0
  for k in (stack.read_file(log) or ""):gmatch("Collected (%d+) [%w ]- values for") do n = n + tonumber(k) end
  return n
end

-- Points stored in the raw RPs of both stats databases (every measurement).
local function stored()
  local total = 0
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"./.*/', db)
    local r = d and d.results and d.results[1]
    for _, s in ipairs(r and r.series or {}) do total = total + (s.values[1][2] or 0) end
  end
  return math.tointeger(total) or total
end

local function influx_stop() os.execute(q(influxd_sh) .. " stop " .. q(influx.dir) .. " >/dev/null 2>&1") end
local function influx_restart()
  local rc, _, err = stack.run(q(influxd_sh) .. " start " .. q(influx.dir),
    { env = { TS_INFLUX_PORT = tostring(influx.port) }, timeout = 90 })
  assert(rc == 0, "influxd restart failed: " .. err)
  influx.pid = tonumber(stack.read_file(influx.dir .. "/pid"))
end

local function spool_bytes(dir)
  local _, out = stack.run("du -sb " .. q(dir) .. " 2>/dev/null | cut -f1")
  return tonumber(out) or 0
end

local function count_in(log, pat)
  local n = 0
  for _ in (stack.read_file(log) or ""):gmatch(pat) do n = n + 1 end
  return n
end

local function wait_log(log, pat, s)
  return stack.wait_until(function() return (stack.read_file(log) or ""):find(pat) end, s or 20, 0.1)
end

local function peak_rss_kb(pid)
  local s = stack.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
end

describe("fault suite: the spool #asan", function()
  local sim
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
    -- --poll-ms 250: a sample time never repeats between two polls a second apart, so
    -- every polled point is a distinct point in InfluxDB
    sim = start_sim("--cdns 1 --caches 20 --ds 3 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250")
  end)
  teardown(function() stack.cleanup_all() end)
  before_each(function() stack.influx_drop_series(influx.url) end)

  it("1. influxd stopped for several polls, then back: every polled point stored", function()
    local cfg = write_config("outage", sim.to_url)
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/outage.log")
    assert(wait_log(d.log, "Sent %d+ stats", 30), stack.read_file(d.log))
    influx_stop()
    local t0 = stack.now()
    stack.sleep(8)
    local during = polled(d.log)
    local spooled = spool_bytes(tmp .. "/state-outage/spool")
    influx_restart()
    local ok = stack.wait_until(function() return stored() >= polled(d.log) end, 120, 0.5)
    local back = stack.now() - t0 - 8
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p, s = polled(d.log), stored()
    print(("fault 1: influxd down 8 s (%d points polled by then, spool %d bytes); back after restart in %.1f s; "
      .. "polled %d stored %d lost %d"):format(during, spooled, back, p, s, p - s))
    assert.truthy(ok, "not everything arrived: polled " .. p .. " stored " .. s)
    assert.are.equal(p, s)
    assert.truthy(spooled > 0)
  end)

  it("2. kill -9 with points pending and a non-empty spool, then a restart: nothing lost #kill", function()
    local cfg = write_config("kill", sim.to_url)
    local log1 = tmp .. "/kill1.log"
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log1)
    assert(wait_log(log1, "Sent %d+ stats", 30), stack.read_file(log1))
    influx_stop()
    stack.sleep(5)
    local spooled = spool_bytes(tmp .. "/state-kill/spool")
    d:kill("KILL")
    d:wait(10)
    local p1 = polled(log1)
    influx_restart()
    local log2 = tmp .. "/kill2.log"
    local d2 = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log2)
    assert(wait_log(log2, "replaying", 20), stack.read_file(log2))
    local ok = stack.wait_until(function() return stored() >= p1 + polled(log2) end, 120, 0.5)
    local rss = peak_rss_kb(d2.pid)
    assert.are.equal(0, d2:stop(), "SIGTERM: exit 0")
    local p = p1 + polled(log2)
    local s = stored()
    print(("fault 2: kill -9 after 5 s of outage (spool %d bytes, %d points polled by the killed run); restart "
      .. "replayed; polled %d stored %d lost %d; peak RSS of the second run %d kB"):format(spooled, p1, p, s, p - s,
      rss))
    assert.truthy(ok, "not everything arrived: polled " .. p .. " stored " .. s)
    assert.are.equal(p, s)
  end)

  it("5. a torn last record and a corrupted byte in a spool segment: counted, the rest replayed", function()
    local cfg = write_config("torn", sim.to_url)
    local log1 = tmp .. "/torn1.log"
    influx_stop()
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log1)
    assert(wait_log(log1, "Collected", 30), stack.read_file(log1))
    stack.sleep(4)
    d:kill("KILL")
    d:wait(10)
    local p1 = polled(log1)
    -- the spool's records, walked as include/ts_spool.h describes them
    local dir = tmp .. "/state-torn/spool"
    local _, files = stack.run("ls " .. q(dir) .. " | grep 'seg$' | sort")
    local segs = {}
    for f in files:gmatch("%S+") do segs[#segs + 1] = dir .. "/" .. f end
    assert.truthy(#segs >= 1)
    local path = segs[#segs]
    local data = assert(stack.read_file(path))
    local recs, off = {}, 17
    while off + 16 <= #data do
      local _, len = string.unpack("<I4I4", data, off)
      if off + 16 + len - 1 > #data then break end
      local lines = string.unpack("<I4", data, off + 16)
      recs[#recs + 1] = { off = off, len = len, lines = lines }
      off = off + 16 + len
    end
    assert.truthy(#recs >= 3, "records in the last segment: " .. #recs)
    -- corrupt one byte in the body of the middle record, and cut the last record short
    local mid = recs[math.floor(#recs / 2)]
    local last = recs[#recs]
    local pos = mid.off + 16 + 40
    local b = data:byte(pos)
    data = data:sub(1, pos - 1) .. string.char(b ~ 0x5a) .. data:sub(pos + 1)
    data = data:sub(1, last.off + 16 + last.len - 1 - 10)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    local lost_expected = mid.lines + last.lines
    influx_restart()
    local log2 = tmp .. "/torn2.log"
    local d2 = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log2)
    local ok = stack.wait_until(function() return stored() >= p1 - lost_expected + polled(log2) end, 120, 0.5)
    assert.are.equal(0, d2:stop(), "SIGTERM: exit 0")
    local p = p1 + polled(log2)
    local s = stored()
    local corrupt = count_in(log2, "corrupt data in segment")
    local torn = count_in(log2, "ends with an incomplete record")
    print(("fault 5: %d records in the damaged segment; one byte flipped in a record of %d lines, the last record "
      .. "(%d lines) cut by 10 bytes; polled %d stored %d, lost %d = the two damaged records; logged %d corrupt, %d torn")
      :format(#recs, mid.lines, last.lines, p, s, p - s, corrupt, torn))
    assert.truthy(ok)
    assert.are.equal(p - lost_expected, s)
    assert.are.equal(1, corrupt)
    assert.are.equal(1, torn)
  end)
end)
