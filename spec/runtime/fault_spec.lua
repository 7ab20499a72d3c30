-- fault_spec.lua: the fault suite of the durable spool (test side). The real tstats daemon
-- against the simulator and a real influxd 1.6.7: InfluxDB stopped for several polls, kill -9
-- with a non-empty spool, a torn and a corrupted spool segment. Each test prints what it did
-- and what it counted, and passes only if every point a poll accepted is in InfluxDB (exactly:
-- InfluxDB keeps one point per series and time, so a resend is not a second point).
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

local tstats_bin = stack.bin("tstats")
local influxd_sh = stack.root() .. "/scripts/lib/influxd.sh"

local influx, tmp

local function start_sim(args) return stack.sim_start(args) end

local function write_config(name, to_url, extra, url)
  return stack.write_config(tmp .. "/config-" .. name .. ".lua", { to_url = to_url, influx_url = url or influx.url,
    influx_extra = "timeout = 2", config_interval = 300, state_dir = tmp .. "/state-" .. name, extra = extra })
end

local polled, point_keys, set_size = stack.polled, stack.point_keys, stack.set_size
local function stored(url) return stack.stored(url or influx.url) end

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

-- The writer saw a server back: its /ping probe answered, or a write went
-- through after the restart (a retry can beat the probe's answer).
local function back_up(log, sent_before, s)
  return stack.wait_until(function()
    return (stack.read_file(log) or ""):find("answers /ping") or count_in(log, "Sent %d+ stats") > sent_before
  end, s or 20, 0.1)
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
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(d.log, "Sent %d+ stats", 30), stack.read_file(d.log))
    influx_stop()
    local t0 = stack.now()
    stack.sleep(8)
    local during = polled(d.log)
    local spooled = spool_bytes(tmp .. "/state-outage/spool")
    local sent0 = count_in(d.log, "Sent %d+ stats")
    influx_restart()
    local t1 = stack.now()
    -- recovery does not wait out the backoff: a /ping probe every second while it is down
    -- (a retry that happens to get through before the probe's answer is as good)
    assert(back_up(d.log, sent0, 30), "no probe answered and nothing was sent: " .. stack.read_file(d.log))
    local probe_s = stack.now() - t1
    local ok = stack.wait_until(function() return stored() >= polled(d.log) end, 120, 0.5)
    local back = stack.now() - t0 - 8
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p, s = polled(d.log), stored()
    print(("fault 1: influxd down 8 s (%d points polled by then, spool %d bytes); the /ping probe saw it back %.1f s "
      .. "after its restart, all stored %.1f s after it; polled %d stored %d lost %d"):format(during, spooled, probe_s,
      back, p, s, p - s))
    assert.truthy(ok, "not everything arrived: polled " .. p .. " stored " .. s)
    assert.are.equal(p, s)
    assert.truthy(spooled > 0)
  end)

  it("2. kill -9 with points pending and a non-empty spool, then a restart: nothing lost #kill", function()
    local cfg = write_config("kill", sim.to_url)
    local log1 = tmp .. "/kill1.log"
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log1)
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
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
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
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

  it("11. InfluxDB answering 413 (a small max-body-size): chunks split and resent, nothing lost", function()
    local small = stack.influxd_start({ env = { TS_INFLUX_MAX_BODY = "20000" } })
    local rc, _, err = stack.run(q(tstats_bin) .. " setup-influx --replication 1", { env = { TSTATS_INFLUX_URL = small.url } })
    assert.are.equal(0, rc, err)
    local cfg = write_config("413", sim.to_url, "", small.url)
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/413.log")
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(d.log, "Sent %d+ stats", 60), stack.read_file(d.log))
    stack.sleep(4)
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p, s = polled(d.log), stored(small.url)
    local fin = (stack.read_file(d.log) or ""):match("stats: polls=[^\n]*") or ""
    local splits = tonumber(fin:match("split_413=(%d+)")) or 0
    print(("fault 11: influxd with max-body-size 20000 bytes (a poll is ~100 kB of line protocol); %d chunks split "
      .. "after 413; polled %d stored %d lost %d"):format(splits, p, s, p - s))
    assert.truthy(splits > 0, fin)
    assert.are.equal(p, s)
    small:stop()
  end)

  it("failover fails back to the first healthy URL once it answers again", function()
    local second = stack.influxd_start_atc()
    local cfg = write_config("failback", sim.to_url, "", nil)
    -- both servers, the usual one first
    local text = stack.read_file(cfg):gsub('urls = { "([^"]+)" }', 'urls = { "%1", "' .. second.url .. '" }')
    local f = assert(io.open(cfg, "w")); f:write(text); f:close()
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/failback.log")
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(d.log, "Sent %d+ stats", 30), stack.read_file(d.log))
    influx_stop()
    stack.sleep(4)
    local on_second = stored(second.url)
    influx_restart()
    assert(wait_log(d.log, "writing to it %(failback", 40), "no failback: " .. stack.read_file(d.log))
    stack.sleep(1.5)   -- let chunks already in flight to the second server finish
    local second_at_failback = stored(second.url)
    local first_before = stored()
    stack.sleep(4)
    local second_after, first_after = stored(second.url), stored()
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p = polled(d.log)
    -- A write the first server stored as it was killed, before it could answer, is sent to
    -- the second as well (at least once): count such points apart, lose none.
    local union = set_size(point_keys(second.url, point_keys(influx.url, {})))
    local both = stored() + stored(second.url)
    print(("failback: first server down 4 s: %d points went to the second; after the failback the first got %d more "
      .. "points in 4 s, the second %d; polled %d, stored on the two %d, distinct %d (on both: %d)"):format(on_second,
      first_after - first_before, second_after - second_at_failback, p, both, union, both - union))
    assert.truthy(on_second > 0)
    assert.truthy(first_after > first_before)
    assert.are.equal(second_at_failback, second_after)
    assert.are.equal(p, union)
    second:stop()
  end)

  it("8. SIGHUP with writes in flight: an empty influxdb.urls is refused, a new server list applies, nothing lost", function()
    local second = stack.influxd_start_atc()
    local cfg = write_config("hup", sim.to_url)
    local original = stack.read_file(cfg)
    local function rewrite(urls)
      local f = assert(io.open(cfg, "w"))
      f:write((original:gsub('urls = { "[^"]+" }', "urls = " .. urls)))
      f:close()
    end
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/hup.log")
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(d.log, "Sent %d+ stats", 30), stack.read_file(d.log))
    -- the first server hangs: its writes stay in flight until they time out (influxdb.timeout 2 s)
    os.execute("kill -STOP " .. influx.pid)
    stack.sleep(1.5)
    rewrite("{}")
    d:kill("HUP")
    assert(wait_log(d.log, "new configuration rejected", 10), stack.read_file(d.log))
    local refused = (stack.read_file(d.log) or ""):find("'influxdb.urls' must list at least one value", 1, true)
    rewrite('{ "' .. second.url .. '" }')
    d:kill("HUP")
    assert(wait_log(d.log, "configuration reloaded", 10), stack.read_file(d.log))
    stack.sleep(4)
    os.execute("kill -CONT " .. influx.pid)
    stack.sleep(3)
    assert.truthy(d:alive(), "the daemon survived both reloads")
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p = polled(d.log)
    local union = set_size(point_keys(second.url, point_keys(influx.url, {})))
    local a, b = stored(), stored(second.url)
    print(("fault 8 (reload): first server stopped with writes in flight, SIGHUP to urls = {} (refused: %s), SIGHUP "
      .. "to a second server; polled %d, first %d + second %d stored, %d distinct, lost %d"):format(
      refused and "yes" or "NO", p, a, b, union, p - union))
    assert.truthy(refused)
    assert.are.equal(p, union)
    second:stop()
  end)

  it("6. mirror mode with one of two influxd down for a while: both end with identical data", function()
    local second = stack.influxd_start_atc()
    local cfg = write_config("mirror", sim.to_url, 'influxdb = { urls = { "' .. influx.url .. '", "' .. second.url
      .. '" }, mode = "mirror", timeout = 2 },')
    -- the extra influxdb table above replaces the one write_config wrote
    local text = stack.read_file(cfg):gsub('  influxdb = { urls = { "[^"]+" }, timeout = 2 },\n', "", 1)
    local f = assert(io.open(cfg, "w")); f:write(text); f:close()
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", tmp .. "/mirror.log")
    -- a failed assertion must not leave this daemon writing into the next test's data
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(d.log, "influxdb.mode = mirror", 30), stack.read_file(d.log))
    assert(wait_log(d.log, "Sent %d+ stats", 30), stack.read_file(d.log))
    os.execute(q(influxd_sh) .. " stop " .. q(second.dir) .. " >/dev/null 2>&1")
    stack.sleep(6)
    local first_during = stored()
    local sent0 = count_in(d.log, "Sent %d+ stats")
    local rc, _, err = stack.run(q(influxd_sh) .. " start " .. q(second.dir),
      { env = { TS_INFLUX_PORT = tostring(second.port) }, timeout = 90 })
    assert.are.equal(0, rc, err)
    assert(back_up(d.log, sent0, 30), "the second server's probe never answered: " .. stack.read_file(d.log))
    local ok = stack.wait_until(function()
      local p = polled(d.log)
      return stored() >= p and stored(second.url) >= p
    end, 120, 0.5)
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local p = polled(d.log)
    local a, b = point_keys(influx.url, {}), point_keys(second.url, {})
    local na, nb, same = set_size(a), set_size(b), 0
    for k in pairs(a) do if b[k] then same = same + 1 end end
    print(("fault 6 (mirror): second of two servers down 6 s (the first stored %d points meanwhile); polled %d, "
      .. "first %d, second %d, in both %d"):format(first_during, p, na, nb, same))
    assert.truthy(ok)
    assert.are.equal(p, na)
    assert.are.equal(p, nb)
    assert.are.equal(p, same)
    second:stop()
  end)
end)
