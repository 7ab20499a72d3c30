-- targets_spec.lua: the daemon's targets (test side). A SIGHUP that changes influxdb.urls or
-- influxdb.mode is applied, not only logged: targets are added and retired while the daemon
-- polls, against two real influxd 1.6.7 and the simulator; /metrics and the stats: lines show
-- every target; nothing polled is lost across the changes (InfluxDB keeps one point per series
-- and time, so a resend is not a second point).
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

local tstats_bin = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")

local sim, a, b, tmp

local function start_sim(args)
  local dir = stack.tmpdir()
  local ready = dir .. "/ready.json"
  local h = stack.spawn("exec " .. sim_bin .. " --ready-file " .. q(ready) .. " " .. args, dir .. "/sim.log")
  assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05),
    "simulator did not start: " .. tostring(stack.read_file(dir .. "/sim.log")))
  h.info = cjson.decode(stack.read_file(ready))
  return h
end

local function write_config(path, urls, mode, port)
  local list = {}
  for _, u in ipairs(urls) do list[#list + 1] = ("%q"):format(u) end
  stack.write_file(path, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %s }, mode = %q, timeout = 2 },
  polling_interval = 1, publishing_interval = 1, config_interval = 300,
  state_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  shutdown_timeout = 5,
  http = { listen = "127.0.0.1:%d" },
}
]]):format(sim.info.to_url, table.concat(list, ", "), mode, tmp .. "/state", port))
end

local polled, point_keys, size = stack.polled, stack.point_keys, stack.set_size

local function metrics(port)
  local rc, out = stack.run("curl -sS -m 10 http://127.0.0.1:" .. port .. "/metrics")
  assert(rc == 0, out)
  return out
end

-- written count of one target in /metrics, nil when the target is not listed
local function target_written(text, name)
  local pat = 'tstats_target_points_total{target="' .. name:gsub("%p", "%%%0") .. '",kind="influxdb",outcome="written"} (%d+)'
  return tonumber(text:match(pat))
end

local function wait_log(log, plain, s)
  return stack.wait_until(function() return (stack.read_file(log) or ""):find(plain, 1, true) end, s or 30, 0.1)
end

describe("targets: SIGHUP applies influxdb.urls and influxdb.mode #asan", function()
  setup(function()
    tmp = stack.tmpdir()
    -- --poll-ms 250: a sample time never repeats between two polls a second apart
    sim = start_sim("--cdns 1 --caches 20 --ds 3 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250")
    a = stack.influxd_start_atc()
    b = stack.influxd_start_atc()
  end)
  teardown(function() stack.cleanup_all() end)

  it("failover [A] -> mirror [A, B] -> mirror [B]: B added, A retired, nothing lost", function()
    local port = stack.free_port()
    local cfg, log = tmp .. "/config.lua", tmp .. "/tstats.log"
    write_config(cfg, { a.url }, "failover", port)
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(wait_log(log, "Sent "), stack.read_file(log))
    assert(stack.wait_until(function() return (target_written(metrics(port), "influx") or 0) > 0 end, 20, 0.3),
      "the failover target in /metrics: " .. metrics(port))

    -- to mirror mode over both: two targets made, the failover one retired
    local na, nb = "influx:" .. a.url, "influx:" .. b.url
    write_config(cfg, { a.url, b.url }, "mirror", port)
    d:kill("HUP")
    assert(wait_log(log, "influxdb: " .. nb .. " added"), stack.read_file(log))
    assert(wait_log(log, "influxdb: " .. na .. " added"), stack.read_file(log))
    assert(wait_log(log, "influxdb: influx is not configured any more"), stack.read_file(log))
    assert(wait_log(log, "influxdb: influx closed"), stack.read_file(log))
    assert(stack.wait_until(function()
      local m = metrics(port)
      return (target_written(m, nb) or 0) > 0 and (target_written(m, na) or 0) > 0 and target_written(m, "influx") == nil
    end, 30, 0.3), "both mirror targets write, the failover one is gone: " .. metrics(port))
    assert.truthy(size(point_keys(b.url, {})) > 0, "B stores points")

    -- B only: A retired, its data stops growing while B's grows
    write_config(cfg, { b.url }, "mirror", port)
    d:kill("HUP")
    assert(wait_log(log, "influxdb: " .. na .. " is not configured any more"), stack.read_file(log))
    assert(wait_log(log, "influxdb: " .. na .. " closed"), stack.read_file(log))
    local a_then, b_then = size(point_keys(a.url, {})), size(point_keys(b.url, {}))
    stack.sleep(4)
    local a_later, b_later = size(point_keys(a.url, {})), size(point_keys(b.url, {}))
    assert.are.equal(a_then, a_later, "A gets nothing once retired")
    assert.truthy(b_later > b_then, "B goes on: " .. b_then .. " -> " .. b_later)
    local m = metrics(port)
    assert.truthy(target_written(m, nb), m)
    assert.is_nil(target_written(m, na), m)

    -- everything polled reached one of them, and B everything since it replaced A
    -- (the count of polled points is read first: the queries take a while and polls go on)
    local ok = stack.wait_until(function()
      local p = polled(log)
      return size(point_keys(a.url, point_keys(b.url, {}))) >= p
    end, 60, 0.5)
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local text = stack.read_file(log)
    local p = polled(log)
    local union = size(point_keys(a.url, point_keys(b.url, {})))
    print(("\n  targets: polled %d; A %d (retired), B %d (added by SIGHUP); in A or B %d"):format(p, a_later,
      size(point_keys(b.url, {})), union))
    assert.truthy(ok)
    assert.are.equal(p, union)
    -- the final stats: lines name every target of the run, and only those
    local fin = text:sub((text:find("Shutdown Request Received", 1, true)))
    assert.truthy(fin:find("stats: target " .. nb .. " (influxdb): acked=", 1, true), fin)
    assert.falsy(fin:find("stats: target " .. na .. " ", 1, true), fin)
  end)
end)
