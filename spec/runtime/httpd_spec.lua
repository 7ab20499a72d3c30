-- Runtime spec (issue "Run it as a service"): the HTTP listener of a running `tstats run`
-- against the simulator and a real influxd. /metrics parsed by Prometheus' own Python parser
-- (Debian's python3-prometheus-client) and checked against what the test caused (polls,
-- failovers, failures, points); /health turning 503 when a CDN's monitors fail and 200
-- when they recover; /ready; auth; the status page rendered by headless Chromium (DOM
-- checked, screenshot kept in <build>/test-output/). Also the `stats:` line's failure
-- counters. Test side, Lua + /usr/bin/python3 + chromium.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local q = stack.quote
local tstats_bin = stack.bin("tstats")

-- Prometheus text on stdin -> JSON [{name, type, samples: [[name, labels, value]]}];
-- the parser raises on malformed exposition text (exit 1, message on stderr).
local PARSE = [[
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [[s.name, s.labels, "NaN" if math.isnan(s.value) else s.value] for s in f.samples]})
print(json.dumps(out))
]]

local tmp, influx, sim, parser

local function curl(url, extra)
  local rc, out, err = stack.run("curl -sS -m 10 -w '\\n%{http_code} %{content_type}' " .. (extra or "") .. " " .. q(url))
  assert(rc == 0, "curl " .. url .. ": " .. err)
  local body, code, ctype = out:match("^(.*)\n(%d+) ?(.*)$")
  return tonumber(code), body, ctype
end

local function scrape(base)
  local code, body, ctype = curl(base .. "/metrics")
  assert.are.equal(200, code)
  local rc, out, err = stack.run("/usr/bin/python3 " .. q(parser), { stdin = body })
  assert(rc == 0, "the Prometheus parser refused /metrics: " .. err .. "\n" .. body:sub(1, 2000))
  local fams = {}
  for _, f in ipairs(cjson.decode(out)) do fams[f.name] = f end
  return fams, body, ctype
end

-- The value of family `fam`'s sample `name` whose labels include `labels`.
local function value(fams, fam, name, labels)
  local f = fams[fam]
  if not f then return nil end
  for _, s in ipairs(f.samples) do
    if s[1] == name then
      local match = true
      for k, v in pairs(labels or {}) do if s[2][k] ~= v then match = false end end
      if match then return s[3], s[2] end
    end
  end
end

local function start_sim(args) return stack.sim_start(args) end

local function config(dir, extra, influx_url)
  extra = extra or ""
  local summary = nil   -- a test that sets summary itself gets no default one
  if extra:find("summary =", 1, true) then summary = false end
  return stack.write_config(dir .. "/config.lua", { to_url = sim.info.to_url, influx_url = influx_url or influx.url,
    state_dir = dir .. "/state", summary = summary, extra = "shutdown_timeout = 2,\n  " .. extra })
end

local function start_tstats(extra, opts)
  opts = opts or {}
  local dir = opts.dir or stack.tmpdir()   -- opts.dir: the same state dir as an earlier run
  local port = stack.free_port()
  local cfg = config(dir, (extra or ""):gsub("PORT", tostring(port)), opts.influx_url)
  -- a log of its own, so that "listening" is this run's
  local log = dir .. (opts.dir and ("/tstats-" .. port .. ".log") or "/tstats.log")
  local h = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log, { env = opts.env })
  h.base = "http://127.0.0.1:" .. port
  h.port = port
  h.dir = dir
  h.logtext = function() return stack.read_file(log) or "" end
  assert(stack.wait_until(function() return h.logtext():find("http: listening on", 1, true) end, 15),
    "listener up: " .. h.logtext())
  return h
end

local function sum_requests(st, cdn, route)
  local n = 0
  for _, m in ipairs(st.monitors) do
    if m.cdn == cdn then n = n + (m.requests[route] or 0) end
  end
  return n
end

describe("HTTP listener #asan", function()
  setup(function()
    tmp = stack.tmpdir()
    parser = tmp .. "/parse.py"
    stack.write_file(parser, PARSE)
    influx = stack.influxd_start_atc()
    sim = start_sim("--cdns 2 --monitors-per-cdn 2 --caches 6 --ds 3")
  end)
  teardown(function() stack.cleanup_all() end)

  it("is off unless http.listen is set", function()
    local dir = stack.tmpdir()
    local d = stack.spawn(tstats_bin .. " --config " .. q(config(dir)) .. " run", dir .. "/tstats.log")
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(dir .. "/tstats.log") or ""):find("Collected %d+ cache stats values")
    end, 20))
    assert.falsy((stack.read_file(dir .. "/tstats.log") or ""):find("http: listening", 1, true))
    local _, out = stack.run("ss -Hltnp | grep -c 'pid=" .. d.pid .. ",' || true")
    assert.are.equal("0", out:gsub("%s+", ""), "no listening socket")
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)

  it("serves /metrics that a real Prometheus parser accepts, with values the test caused", function()
    sim.post("/sim/fault?kind=none")
    sim.post("/sim/reset?what=counters")
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT" },]])
    -- /ready: 200 once a plan is in and a poll finished
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/ready") == 200 end, 20), "ready")
    -- points reach InfluxDB
    assert.truthy(stack.wait_until(function()
      local f = scrape(d.base)
      return (value(f, "tstats_points_written", "tstats_points_written_total", { db = "cache_stats" }) or 0) > 0
    end, 20), "points written")
    -- cdn1's first monitor fails: the collector moves to the second one
    sim.post("/sim/fault?spec=503@cdn1:0")
    local m0, m1 = sim.monitor("cdn1", 0), sim.monitor("cdn1", 1)
    assert.truthy(stack.wait_until(function()
      local f = scrape(d.base)
      return (value(f, "tstats_monitor_failovers", "tstats_monitor_failovers_total", { cdn = "cdn1", endpoint = "CacheStats" }) or 0) >= 1
    end, 20), "failovers counted")
    -- later polls start at the monitor that answered: a few more of them
    local p0 = value(scrape(d.base), "tstats_polls", "tstats_polls_total", { cdn = "cdn1", endpoint = "CacheStats" })
    assert.truthy(stack.wait_until(function()
      return value(scrape(d.base), "tstats_polls", "tstats_polls_total", { cdn = "cdn1", endpoint = "CacheStats" }) >= p0 + 2
    end, 20))

    local fams, body, ctype = scrape(d.base)
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    for name, f in pairs(fams) do
      assert.truthy(name:match("^tstats_"), "tstats_* name: " .. name)
      assert.truthy(f.help and #f.help > 0, "HELP for " .. name)
    end
    -- counters are exposed with _total (the parser strips it from the family name)
    for line in body:gmatch("# TYPE (%S+ counter)") do
      assert.truthy(line:match("_total counter$"), "counter named *_total: " .. line)
    end
    local types = {
      tstats_build_info = "gauge", tstats_polls = "counter", tstats_poll_failures = "counter",
      tstats_monitor_failovers = "counter", tstats_monitor_in_use = "gauge", tstats_poll_duration_seconds = "histogram",
      tstats_poll_points = "gauge", tstats_points_collected = "counter", tstats_points_written = "counter",
      tstats_points_rejected = "counter", tstats_points_dropped = "counter", tstats_points_pending = "gauge",
      tstats_writer_sent_bytes = "counter", tstats_writer_retries = "counter", tstats_writer_backoff_seconds = "gauge",
      tstats_lua_calls = "counter", tstats_lua_errors = "counter", tstats_lua_heap_bytes = "gauge",
      tstats_traffic_ops_refreshes = "counter", tstats_plan_age_seconds = "gauge",
      tstats_process_cpu_seconds = "counter", tstats_process_resident_memory_bytes = "gauge",
      tstats_poll_received_bytes = "counter",
    }
    for name, t in pairs(types) do
      assert.truthy(fams[name], "family " .. name)
      assert.are.equal(t, fams[name].type, name)
    end
    local _, ver = stack.run(q(tstats_bin) .. " --version")
    local bv, bl = value(fams, "tstats_build_info", "tstats_build_info")
    assert.are.equal(1, bv)
    assert.truthy(ver:find("tstats " .. bl.version, 1, true), ver)

    -- the monitor in use: cdn1 on its second monitor, cdn2 on its first
    local _, ml = value(fams, "tstats_monitor_in_use", "tstats_monitor_in_use", { cdn = "cdn1", endpoint = "CacheStats" })
    assert.are.equal(m1.url, ml.monitor)
    assert.are_not.equal(m0.url, ml.monitor)
    local _, ml2 = value(fams, "tstats_monitor_in_use", "tstats_monitor_in_use", { cdn = "cdn2", endpoint = "DsStats" })
    assert.are.equal(sim.monitor("cdn2", 0).url, ml2.monitor)

    -- polls + failovers = the requests the simulator's monitors of that CDN answered
    -- (within one poll round in flight between the two reads)
    local polls = value(fams, "tstats_polls", "tstats_polls_total", { cdn = "cdn1", endpoint = "CacheStats" })
    local fo = value(fams, "tstats_monitor_failovers", "tstats_monitor_failovers_total", { cdn = "cdn1", endpoint = "CacheStats" })
    local req = sum_requests(sim.stats(), "cdn1", "CacheStats")
    assert.truthy(req >= polls + fo and req <= polls + fo + 2,
      ("sim saw %d CacheStats requests on cdn1, tstats %d polls + %d failovers"):format(req, polls, fo))
    assert.are.equal(0, value(fams, "tstats_poll_failures", "tstats_poll_failures_total", { cdn = "cdn1", endpoint = "CacheStats" }))
    assert.are.equal(0, value(fams, "tstats_monitor_failovers", "tstats_monitor_failovers_total", { cdn = "cdn2", endpoint = "CacheStats" }))
    -- the histogram: +Inf bucket = count = polls; buckets grow
    local inf = value(fams, "tstats_poll_duration_seconds", "tstats_poll_duration_seconds_bucket", { cdn = "cdn1", endpoint = "CacheStats", le = "+Inf" })
    local cnt = value(fams, "tstats_poll_duration_seconds", "tstats_poll_duration_seconds_count", { cdn = "cdn1", endpoint = "CacheStats" })
    assert.are.equal(polls, cnt)
    assert.are.equal(cnt, inf)
    local last = -1
    for _, s in ipairs(fams.tstats_poll_duration_seconds.samples) do
      if s[1]:match("_bucket$") and s[2].cdn == "cdn2" and s[2].endpoint == "DsStats" then
        assert.truthy(s[3] >= last, "cumulative buckets")
        last = s[3]
      end
    end
    -- points per poll: 6 caches per CDN, every CiaB stat the sim serves
    local pp = value(fams, "tstats_poll_points", "tstats_poll_points", { cdn = "cdn2", endpoint = "CacheStats" })
    assert.truthy(pp > 0 and pp % 6 == 0, "points of 6 caches: " .. tostring(pp))
    -- per destination: collected >= written > 0; nothing rejected or dropped
    local col = value(fams, "tstats_points_collected", "tstats_points_collected_total", { db = "cache_stats", rp = "daily" })
    local wr = value(fams, "tstats_points_written", "tstats_points_written_total", { db = "cache_stats" })
    assert.truthy(col >= wr and wr > 0, ("collected %s written %s"):format(col, wr))
    assert.truthy(value(fams, "tstats_points_collected", "tstats_points_collected_total", { db = "deliveryservice_stats", rp = "daily" }) > 0)
    assert.are.equal(0, value(fams, "tstats_points_rejected", "tstats_points_rejected_total", { db = "cache_stats" }))
    assert.are.equal(0, value(fams, "tstats_points_dropped", "tstats_points_dropped_total", { db = "cache_stats" }))
    assert.truthy(value(fams, "tstats_writer_sent_bytes", "tstats_writer_sent_bytes_total") > 0)
    assert.truthy(value(fams, "tstats_lua_calls", "tstats_lua_calls_total") > 0)
    assert.are.equal(0, value(fams, "tstats_lua_errors", "tstats_lua_errors_total"))
    assert.truthy(value(fams, "tstats_lua_heap_bytes", "tstats_lua_heap_bytes") > 10000)
    assert.are.equal(1, value(fams, "tstats_traffic_ops_refreshes", "tstats_traffic_ops_refreshes_total", { outcome = "ok" }))
    assert.truthy(value(fams, "tstats_plan_age_seconds", "tstats_plan_age_seconds") >= 0)
    assert.are.equal(4, value(fams, "tstats_plan_endpoints", "tstats_plan_endpoints"))
    assert.truthy(value(fams, "tstats_process_cpu_seconds", "tstats_process_cpu_seconds_total") > 0)
    assert.truthy(value(fams, "tstats_process_resident_memory_bytes", "tstats_process_resident_memory_bytes") > 1e6)
    -- the durable spool (on by default): its size on disk
    assert.are.equal("gauge", fams.tstats_spool_bytes and fams.tstats_spool_bytes.type)
    assert.truthy(value(fams, "tstats_spool_bytes", "tstats_spool_bytes") > 0)
    assert.are.equal(0, value(fams, "tstats_spool_append_failures", "tstats_spool_append_failures_total"))
    -- per reader of the spool: the writer keeps up, so its oldest unacknowledged record is young
    assert.are.equal("gauge", fams.tstats_spool_oldest_unacknowledged_age_seconds.type)
    local age = value(fams, "tstats_spool_oldest_unacknowledged_age_seconds", "tstats_spool_oldest_unacknowledged_age_seconds",
      { target = "influxdb" })
    assert.truthy(age and age >= 0 and age < 10, "spool age of a healthy writer: " .. tostring(age))
    assert.truthy(value(fams, "tstats_spool_target_backlog_bytes", "tstats_spool_target_backlog_bytes", { target = "influxdb" }))
    -- what a restart would read again: never less than what is not acknowledged
    assert.are.equal("gauge", fams.tstats_spool_replay_bytes and fams.tstats_spool_replay_bytes.type)
    local rb = value(fams, "tstats_spool_target_replay_bytes", "tstats_spool_target_replay_bytes", { target = "influxdb" })
    assert.truthy(rb and rb >= value(fams, "tstats_spool_backlog_bytes", "tstats_spool_backlog_bytes"))
    -- what InfluxDB stored is what the writer says it wrote (nothing else writes this database)
    local r = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"."bandwidth"', "cache_stats")
    assert.truthy(r.results[1].series, "bandwidth points stored")
    sim.post("/sim/fault?kind=none")
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
    -- the listener stops without libmicrohttpd complaining (quiesce needs its inter-thread channel)
    assert.falsy(d.logtext():find("MHD_quiesce_daemon", 1, true), "shutdown log: " .. d.logtext():sub(-600))
  end)

  it("/health turns 503 with reasons when a CDN's monitors all fail, and 200 again when they recover", function()
    sim.post("/sim/fault?kind=none")
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT", health_intervals = 2 },]])
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/health") == 200 end, 20),
      "healthy once both CDNs are polled and written")
    local _, body = curl(d.base .. "/health")
    local h = cjson.decode(body)
    assert.are.equal("ok", h.status)
    assert.are.equal(4, #h.endpoints)
    -- every monitor of cdn2 answers 503: after 2 intervals the CDN is reported
    sim.post("/sim/fault?spec=503@cdn2")
    local bad = stack.wait_until(function()
      local code, b = curl(d.base .. "/health")
      return code == 503 and b
    end, 20)
    assert.truthy(bad, "503 after cdn2's monitors failed")
    h = cjson.decode(bad)
    assert.are.equal("unhealthy", h.status)
    local text = table.concat(h.reasons, "\n")
    assert.truthy(text:find("cdn2 CacheStats", 1, true), text)
    assert.truthy(text:find("HTTP 503", 1, true), "the last error is named: " .. text)
    assert.falsy(text:find("cdn1", 1, true), "cdn1 is fine: " .. text)
    local fams = scrape(d.base)
    assert.truthy(value(fams, "tstats_poll_failures", "tstats_poll_failures_total", { cdn = "cdn2", endpoint = "CacheStats" }) >= 2)
    -- /ready stays 200: it is about start-up
    assert.are.equal(200, (curl(d.base .. "/ready")))
    -- recovery
    sim.post("/sim/fault?kind=none")
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/health") == 200 end, 20), "healthy again")
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)

  it("/health reports InfluxDB not taking writes; /ready waits for Traffic Ops", function()
    sim.post("/sim/fault?kind=none")
    sim.post("/sim/fault?spec=to-down")
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT", health_intervals = 2 },]],
      { influx_url = "http://127.0.0.1:" .. stack.free_port() })
    local code, body = curl(d.base .. "/ready")
    assert.are.equal(503, code)
    assert.truthy(cjson.decode(body).reason:find("Traffic Ops", 1, true), body)
    code, body = curl(d.base .. "/health")
    assert.are.equal(503, code)
    assert.truthy(body:find("no polling plan yet", 1, true), body)
    sim.post("/sim/fault?kind=none&monitor=to")
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/ready") == 200 end, 30), "ready after TO is back")
    local bad = stack.wait_until(function()
      local c, b = curl(d.base .. "/health")
      return c == 503 and b:find("influxdb:", 1, true) and b
    end, 20)
    assert.truthy(bad, "the writer's trouble is a reason")
    assert.truthy(bad:find("points pending and nothing written", 1, true), bad)
    assert.falsy(bad:find("cdn1 CacheStats", 1, true), "polls are fine: " .. bad)
    -- per CDN: each one's points are not reaching their databases, and the reason names it
    local reasons = stack.wait_until(function()
      local c, b = curl(d.base .. "/health")
      if c ~= 503 then return nil end
      local t = table.concat(cjson.decode(b).reasons, "\n")
      return t:find("cdn1: its points for cache_stats.daily are not being written", 1, true)
        and t:find("cdn2: its points for deliveryservice_stats.daily are not being written", 1, true) and t
    end, 20)
    assert.truthy(reasons, "each CDN named with its destinations: " .. tostring(select(2, curl(d.base .. "/health"))))
    -- the spool holds what InfluxDB did not take, and says how old its oldest record is
    local waited = stack.wait_until(function()
      local f = scrape(d.base)
      local a = value(f, "tstats_spool_oldest_unacknowledged_age_seconds", "tstats_spool_oldest_unacknowledged_age_seconds",
        { target = "influxdb" })
      local bl = value(f, "tstats_spool_target_backlog_bytes", "tstats_spool_target_backlog_bytes", { target = "influxdb" })
      local rb = value(f, "tstats_spool_target_replay_bytes", "tstats_spool_target_replay_bytes", { target = "influxdb" })
      return a and a >= 3 and bl and bl > 0 and rb and rb >= bl and { a, bl }
    end, 20)
    assert.truthy(waited, "spool age grows while InfluxDB is down")
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)

  it("/health names a CDN whose points stop reaching InfluxDB, and is 200 again when InfluxDB is back", function()
    sim.post("/sim/fault?kind=none")
    local port = stack.free_port()
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT", health_intervals = 2 },]],
      { influx_url = "http://127.0.0.1:" .. port })
    -- nothing listens on the InfluxDB port: each CDN is named
    local bad = stack.wait_until(function()
      local c, b = curl(d.base .. "/health")
      local t = c == 503 and table.concat(cjson.decode(b).reasons, "\n") or ""
      return t:find("cdn1: its points for", 1, true) and t:find("cdn2: its points for", 1, true) and t
    end, 30)
    assert.truthy(bad, "both CDNs unhealthy while InfluxDB is down")
    assert.falsy(bad:find("CacheStats: last successful poll", 1, true), "polling is fine: " .. bad)
    -- a real influxd comes up on that very port: the spooled points go in, health recovers
    local late = stack.influxd_start_atc({ port = port })
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/health") == 200 end, 60),
      "healthy again: " .. tostring(select(2, curl(d.base .. "/health"))))
    local fams = scrape(d.base)
    assert.truthy(value(fams, "tstats_points_written", "tstats_points_written_total", { db = "cache_stats" }) > 0)
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
    late:stop()
  end)

  it("exports each CDN's last daily summary, and still knows it after a restart", function()
    sim.post("/sim/fault?kind=none")
    -- yesterday's 1-minute CDN bandwidth for both CDNs, where the daily rollup reads it
    local day = (os.time() - 600) // 86400 * 86400 - 86400
    local lines = {}
    for _, cdn in ipairs({ "cdn1", "cdn2" }) do
      for i = 0, 2 do lines[#lines + 1] = ("bandwidth.cdn.1min,cdn=%s value=%d %d"):format(cdn, 1000 * (i + 1), day + 3600 * i) end
    end
    local st, resp = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    assert.are.equal(204, st, resp)
    local t0 = os.time()
    local summary = [[summary = { enabled = true, sinks = {}, rollups = { "daily" } }, daily_summary_interval = 1,]]
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT" },]] .. summary)
    local function last(base)
      local f = scrape(base)
      local fam = f.tstats_summary_last_success_timestamp_seconds
      return fam and fam.type == "gauge" and value(f, "tstats_summary_last_success_timestamp_seconds",
        "tstats_summary_last_success_timestamp_seconds", { cdn = "cdn1" }), value(f,
        "tstats_summary_last_success_timestamp_seconds", "tstats_summary_last_success_timestamp_seconds", { cdn = "cdn2" })
    end
    local got = stack.wait_until(function()
      local a, b = last(d.base)
      return a and b and { a, b }
    end, 30)
    assert.truthy(got, "a summary time per CDN: " .. d.logtext():sub(-3000))
    assert.truthy(got[1] >= t0 - 1 and got[1] <= os.time() + 1, "cdn1's summary time is this run's: " .. got[1])
    assert.truthy(got[2] >= t0 - 1 and got[2] <= os.time() + 1, "cdn2's: " .. got[2])
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
    -- the same state dir, summaries off: nothing is computed, the times are read back
    local d2 = start_tstats([[http = { listen = "127.0.0.1:PORT" }, summary = { enabled = false },]], { dir = d.dir })
    local again = stack.wait_until(function()
      local a, b = last(d2.base)
      return a and b and { a, b }
    end, 20)
    assert.truthy(again, "known after the restart")
    assert.are.same(got, again)
    d2:kill("TERM")
    assert.are.equal(0, d2:wait(30))
  end)

  it("asks for credentials when configured (basic or bearer, from the environment); a bare port is loopback", function()
    sim.post("/sim/fault?kind=none")
    local d = start_tstats([[http = { listen = "PORT", user = "prom", password = env("TS_HTTP_PW"), token = env("TS_HTTP_TOKEN") },]],
      { env = { TS_HTTP_PW = "s3cret-pw", TS_HTTP_TOKEN = "tok-123" } })
    assert.truthy(d.logtext():find("listening on 127.0.0.1:" .. d.port, 1, true), d.logtext())
    local _, ss = stack.run("ss -Hltn 'sport = :" .. d.port .. "'")
    assert.truthy(ss:find("127.0.0.1:" .. d.port, 1, true), "bound to loopback: " .. ss)
    assert.are.equal(401, (curl(d.base .. "/metrics")))
    assert.are.equal(401, (curl(d.base .. "/metrics", "-H 'Authorization: Bearer nope'")))
    assert.are.equal(401, (curl(d.base .. "/metrics", "-u prom:wrong")))
    assert.are.equal(200, (curl(d.base .. "/metrics", "-H 'Authorization: Bearer tok-123'")))
    assert.are.equal(200, (curl(d.base .. "/metrics", "-u prom:s3cret-pw")))
    local c401, b401 = curl(d.base .. "/health")
    assert.are.equal(401, c401)
    assert.falsy(b401:find("s3cret", 1, true))
    assert.are.equal(405, (curl(d.base .. "/metrics", "-XPOST -u prom:s3cret-pw")))
    assert.are.equal(404, (curl(d.base .. "/nope", "-u prom:s3cret-pw")))
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)

  it("follows http.listen on SIGHUP (moved, then off) and keeps its counters", function()
    sim.post("/sim/fault?kind=none")
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT" },]])
    assert.truthy(stack.wait_until(function() return curl(d.base .. "/ready") == 200 end, 20))
    local before = value(scrape(d.base), "tstats_polls", "tstats_polls_total", { cdn = "cdn1", endpoint = "CacheStats" })
    local port2 = stack.free_port()
    local path = d.dir .. "/config.lua"
    local text = stack.read_file(path)
    stack.write_file(path, (text:gsub("127%.0%.0%.1:" .. d.port, "127.0.0.1:" .. port2)))
    d:kill("HUP")
    local base2 = "http://127.0.0.1:" .. port2
    assert.truthy(stack.wait_until(function()
      local ok, code = pcall(curl, base2 .. "/ready")
      return ok and code == 200
    end, 20), "listening on the new port: " .. d.logtext())
    local after = value(scrape(base2), "tstats_polls", "tstats_polls_total", { cdn = "cdn1", endpoint = "CacheStats" })
    assert.truthy(after >= before, "counters kept across the reload")
    assert.are_not.equal(0, (stack.run("curl -sS -m 3 -o /dev/null " .. q(d.base .. "/metrics"))), "old port closed")
    -- unset: off
    stack.write_file(path, (text:gsub('http = { listen = "127%.0%.0%.1:%d+" },', "")))
    d:kill("HUP")
    assert.truthy(stack.wait_until(function()
      return stack.run("curl -sS -m 3 -o /dev/null " .. q(base2 .. "/metrics")) ~= 0
    end, 20), "listener off after the reload")
    assert.truthy(d:alive())
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)

  it("serves a status page that headless Chromium renders: per CDN monitor, poll age, outcome, points, sparklines", function()
    sim.post("/sim/fault?kind=none")
    sim.post("/sim/fault?spec=503@cdn1:0")
    local d = start_tstats([[http = { listen = "127.0.0.1:PORT" },]])
    -- a few polls so the sparklines have points
    assert.truthy(stack.wait_until(function()
      local f = scrape(d.base)
      return (value(f, "tstats_polls", "tstats_polls_total", { cdn = "cdn2", endpoint = "CacheStats" }) or 0) >= 4
    end, 30))
    local code, page, ctype = curl(d.base .. "/")
    assert.are.equal(200, code)
    assert.truthy(ctype:find("text/html", 1, true))
    assert.falsy(page:find("https?://[%w.]+/[%w/]*%.js"), "no external script")
    assert.falsy(page:find("<link", 1, true), "no external stylesheet")
    local rc, dom, err = stack.run("chromium --headless=new --no-sandbox --disable-gpu --dump-dom " .. q(d.base .. "/"),
      { timeout = 90 })
    assert.are.equal(0, rc, err)
    for _, cdn in ipairs({ "cdn1", "cdn2" }) do
      assert.truthy(dom:find('<section class="cdn" data%-cdn="' .. cdn .. '">'), cdn .. " section rendered")
    end
    local function row(cdn, ep)
      local sec = dom:match('<section class="cdn" data%-cdn="' .. cdn .. '">(.-)</section>')
      return sec and sec:match('<tr class="endpoint" data%-endpoint="' .. ep .. '">(.-)</tr>')
    end
    local r1 = row("cdn1", "CacheStats")
    assert.truthy(r1, dom:sub(1, 3000))
    assert.are.equal(sim.monitor("cdn1", 1).url, r1:match('<td class="monitor">(.-)</td>'), "monitor in use after the failover")
    assert.truthy(r1:match('<td class="age num">[%d.]+ s ago</td>'), r1)
    assert.truthy(r1:match('<td class="outcome ok"[^>]*>ok</td>'), r1)
    local pts = tonumber(r1:match('<td class="points num">(%d+)</td>'))
    assert.truthy(pts and pts > 0, r1)
    local n = tonumber(r1:match('<svg class="spark spark%-points".-data%-count="(%d+)"'))
    assert.truthy(n and n >= 3, "points sparkline over the polls so far: " .. r1)
    assert.truthy(r1:match('<svg class="spark spark%-latency"'), r1)
    local r2 = row("cdn2", "DsStats")
    assert.are.equal(sim.monitor("cdn2", 0).url, r2:match('<td class="monitor">(.-)</td>'))
    assert.truthy(dom:match('<span id="health" class="ok">healthy</span>'), "health shown")
    assert.truthy(tonumber(dom:match('<td class="num" id="writer%-pending">(%d+)</td>')), "writer queue shown")
    assert.truthy(dom:find('id="writer-url">' .. influx.url, 1, true), "InfluxDB URL in use shown")
    -- a screenshot for the record
    local out = stack.build_dir()
    if out:sub(1, 1) ~= "/" then out = stack.root() .. "/" .. out end
    out = out .. "/test-output"
    os.execute("mkdir -p " .. q(out))
    local png = out .. "/status_page.png"
    os.remove(png)
    local src = stack.run("chromium --headless=new --no-sandbox --disable-gpu --window-size=1400,800 --screenshot=" .. q(png)
      .. " " .. q(d.base .. "/"), { timeout = 90 })
    assert.are.equal(0, src)
    local img = stack.read_file(png)
    assert.truthy(img and img:sub(1, 8) == "\137PNG\r\n\26\n", "a PNG at " .. png)
    print("status page screenshot: " .. png)
    sim.post("/sim/fault?kind=none")
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
  end)
end)

describe("the stats: line", function()
  setup(function()
    -- the previous block stopped its own (cleanup_all)
    sim = start_sim("--cdns 2 --monitors-per-cdn 2 --caches 6 --ds 3")
    influx = stack.influxd_start_atc()
  end)
  teardown(function() stack.cleanup_all() end)

  it("carries endpoints_failed, writer_requests_failed and writer_retries", function()
    sim.post("/sim/fault?kind=none")
    sim.post("/sim/fault?spec=503@cdn2")
    local dir = stack.tmpdir()
    -- once: one poll (cdn2's two endpoints fail on both monitors), writes to a closed port
    -- retried until shutdown_timeout
    local cfg = config(dir, "", "http://127.0.0.1:" .. stack.free_port())
    local rc, _, err = stack.run(q(tstats_bin) .. " --config " .. q(cfg) .. " once", { timeout = 60 })
    assert.are_not.equal(0, rc, "nothing written: once fails")
    local line = err:match("stats: [^\n]+")
    assert.truthy(line, err)
    assert.are.equal("2", line:match(" endpoints_failed=(%d+)"), line)
    local failed = tonumber(line:match(" writer_requests_failed=(%d+)"))
    local retries = tonumber(line:match(" writer_retries=(%d+)"))
    assert.truthy(failed and failed >= 2, line)
    assert.truthy(retries and retries >= 1, line)
    -- and all healthy: zeros
    sim.post("/sim/fault?kind=none")
    local cfg2 = config(stack.tmpdir(), "")
    local rc2, _, err2 = stack.run(q(tstats_bin) .. " --config " .. q(cfg2) .. " once", { timeout = 60 })
    assert.are.equal(0, rc2, err2)
    local line2 = err2:match("stats: [^\n]+")
    assert.truthy(line2:find(" endpoints_failed=0 writer_requests_failed=0 writer_retries=0 ", 1, true), line2)
  end)
end)
