-- Runtime spec (issue "Collect a CDN"): the real tstats binary against the
-- simulator (Traffic Ops + Traffic Monitors) and a real influxd: what is stored,
-- failover on 503 / hung / broken monitors, Traffic Ops down at start, dotted
-- cache groups, hostile names, SIGHUP changing the stats list, SIGTERM flushing.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats_bin = stack.bin("tstats")

local influx, tmp
local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function start_sim(args) return stack.sim_start(args) end

local function write_config(to_url, db_suffix, extra)
  return stack.write_config(tmp .. "/config-" .. db_suffix .. ".lua", { to_url = to_url, influx_url = influx.url,
    config_interval = 300, state_dir = tmp .. "/state-" .. db_suffix, extra = extra })
end

local function query(q, db)
  local d = stack.influx_query(influx.url, q, db or "cache_stats", { epoch = "ms" })
  assert(d and d.results, "query failed: " .. q)
  return d.results[1]
end

local function count(measurement, db, where)
  local r = query(('SELECT count(value) FROM "daily".%q %s'):format(measurement, where or ""), db)
  local s = r.series and r.series[1]
  return s and s.values[1][2] or 0
end

local function drop_all() stack.influx_drop_series(influx.url) end

describe("collection #asan", function()
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
  end)
  teardown(function() stack.cleanup_all() end)
  before_each(drop_all)

  it("stores ATC's measurements and tags for every cache and delivery service, with the payload's timestamps", function()
    local sim = start_sim("--cdns 2 --caches 6 --ds 3 --cachegroups 3 --payload-cache-ms 0")
    local cfg = write_config(sim.to_url, "basic")
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("Collected %d+ cache stats values for cdn1 @ %d+"), err)
    assert.truthy(err:find("Sent %d+ stats for cache_stats"), err)
    -- the TO server list decides cachegroup/type of every hostname
    local rc2, servers_json = stack.run("curl -sS -c /dev/null -b /dev/null -m 5 " .. sq(sim.to_url .. "/sim/stats"))
    assert.are.equal(0, rc2)
    local bw = query('SELECT value, cachegroup, cdn, hostname, type FROM "daily"."bandwidth"')
    assert.truthy(bw.series, "bandwidth stored")
    local rows = bw.series[1].values
    assert.are.equal(12, #rows)                    -- 2 CDNs x 6 caches, one poll
    local now = os.time() * 1000
    local seen_dot = false
    for _, r in ipairs(rows) do
      local t, v, cg, cdn, host, typ = table.unpack(r)
      assert.truthy(math.abs(t - now) < 120000, "timestamp is the payload's (recent) ms time")
      assert.truthy(v > 0)
      assert.truthy(host:match("^edge%-") or host:match("^mid%-"), host)
      assert.are.equal(host:match("^edge") and "EDGE" or "MID", typ)
      assert.truthy(cdn == "cdn1" or cdn == "cdn2")
      assert.truthy(host:find(cdn, 1, true), "cache of its own CDN")
      assert.truthy(cg ~= nil and cg ~= cjson.null)
      if cg:find(".", 1, true) then seen_dot = true end
    end
    assert.truthy(seen_dot, "a cache group with a dot in its name is stored whole")
    -- CiaB parameter with '+' arrives (stats= is URL-encoded)
    assert.truthy(count("ats.proxy.process.cache.frags_per_doc.3+") > 0)
    -- '-' becomes '_' in measurements, as ATC
    local m = query("SHOW MEASUREMENTS")
    local names = {}
    for _, v in ipairs(m.series[1].values) do names[v[1]] = true end
    assert.falsy(names["ats.proxy.process.ssl.cipher.user_agent.ECDHE-RSA-AES128-GCM-SHA256"])
    -- delivery services: total, all+type, and per cache group (dotted names whole)
    local ds = query('SHOW TAG VALUES FROM "daily"."kbps" WITH KEY = "cachegroup"', "deliveryservice_stats")
    local cgs = {}
    for _, v in ipairs(ds.series[1].values) do cgs[v[2]] = true end
    assert.truthy(cgs.total and cgs.all, "total and all cache groups")
    local dotted = false
    for k in pairs(cgs) do if k:find(".", 1, true) then dotted = true end end
    assert.truthy(dotted, "dotted cache group parsed from the right")
    local typ = query([[SELECT count(value) FROM "daily"."kbps" WHERE cachegroup = 'all' GROUP BY "type"]], "deliveryservice_stats")
    assert.truthy(typ.series and #typ.series >= 1 and typ.series[1].tags.type, "type tag on cachegroup=all")
    sim:stop()
  end)

  it("fails over to the next monitor when the first answers 503, and when it hangs", function()
    local sim = start_sim("--cdns 1 --caches 4 --fault 503@cdn1:0")
    local cfg = write_config(sim.to_url, "f503")
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("HTTP 503", 1, true), "the 503 is logged")
    assert.are.equal(4, count("bandwidth"))
    local st = sim.stats()
    assert.truthy(st.monitors[1].responses["503"] >= 2, "first monitor answered 503")
    assert.truthy(st.monitors[2].responses["200"] >= 2, "second monitor served the data")
    drop_all()
    sim.post("/sim/fault?spec=" .. "none@cdn1:0")
    sim.post("/sim/fault?spec=" .. "hang@cdn1:0")
    local t0 = os.time()
    rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(os.time() - t0 < 20, "a hung monitor costs a timeout, not forever")
    -- the reason first, then the monitor without its long query
    assert.truthy(err:find("failed to get cdn1 CacheStats: ", 1, true), err)
    assert.truthy(err:find("%(monitor 1 of 2: http://[^%s]+/publish/CacheStats%?%.%.%.%); trying the next"), err)
    assert.are.equal(4, count("bandwidth"))
    sim:stop()
  end)

  it("discards a truncated or invalid payload and takes the next monitor's, never half of it", function()
    for _, fault in ipairs({ "truncate", "invalid" }) do
      drop_all()
      local sim = start_sim("--cdns 1 --caches 50 --fault " .. fault .. "@cdn1:0")
      local cfg = write_config(sim.to_url, "bad-" .. fault)
      local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
      assert.are.equal(0, rc, err)
      assert.truthy(err:find("unparsable body", 1, true), fault .. ": " .. err)
      assert.are.equal(50, count("bandwidth"), fault)
      sim:stop()
    end
  end)

  it("skips the timeslot when every monitor fails, and says so in ATC's words", function()
    local sim = start_sim("--cdns 1 --caches 4 --fault 503")
    local cfg = write_config(sim.to_url, "allbad")
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("unable to get any cdn1 CacheStats URL - skipping timeslot", 1, true), err)
    assert.are.equal(0, count("bandwidth"))
    sim:stop()
  end)

  it("keeps retrying when Traffic Ops is down at start, then polls once it is up", function()
    local port = stack.free_port()
    local cfg = write_config("http://127.0.0.1:" .. port, "todown")
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. cfg .. " run", d .. "/tstats.log")
    stack.sleep(2.5)
    assert.truthy(ts:alive(), "did not exit while Traffic Ops is down")
    local log = stack.read_file(d .. "/tstats.log")
    assert.truthy(log:find("no Traffic Ops data yet; retrying", 1, true), log)
    -- tries go on every few seconds, the warning is said once (not once per try)
    assert.are.equal(1, select(2, log:gsub("no Traffic Ops data yet", "")), log)
    assert.truthy(select(2, log:gsub("Traffic Ops refresh failed", "")) >= 2, log)
    local sim = start_sim("--cdns 1 --caches 3 --to-port " .. port)
    assert.truthy(stack.wait_until(function() return count("bandwidth") >= 3 end, 30, 0.5), "points arrive after TO came up")
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    sim:stop()
  end)

  it("keeps polling every second while a slow Traffic Ops refresh is in progress", function()
    local sim = start_sim("--cdns 1 --caches 3 --payload-cache-ms 0")
    local cfg = write_config(sim.to_url, "toslow", "config_interval = 2,")
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. cfg .. " run", d .. "/tstats.log")
    assert.truthy(stack.wait_until(function() return count("bandwidth") >= 3 end, 30, 0.2), "first points")
    -- every Traffic Ops answer now takes 2.5 s (under the 3 s timeout): a refresh (servers,
    -- parameters) takes ~5 s, during which 1 s polls must go on
    sim.post("/sim/fault?kind=to-slow&ms=2500")
    local log0 = #stack.read_file(d .. "/tstats.log")
    stack.sleep(9)
    local log = stack.read_file(d .. "/tstats.log"):sub(log0 + 1)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    sim:stop()
    local times = {}
    for hh, mm, ss in log:gmatch("T(%d%d):(%d%d):(%d%d%.%d+)Z INFO Collected %d+ cache stats") do
      times[#times + 1] = tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
    end
    local plans = select(2, log:gsub("plan: %d+ endpoints", ""))
    assert.truthy(plans >= 1, "a refresh completed while Traffic Ops was slow:\n" .. log)
    assert.truthy(#times >= 7, #times .. " polls in 9 s:\n" .. log)
    for i = 2, #times do
      assert.truthy(times[i] - times[i - 1] < 2.5, ("a %.1f s gap between polls:\n%s"):format(times[i] - times[i - 1], log))
    end
  end)

  it("round-trips hostile names exactly", function()
    local sim = start_sim("--cdns 1 --caches 4 --fault hostile")
    local cfg = write_config(sim.to_url, "hostile")
    local dry_rc, dry = stack.run(tstats_bin .. " --config " .. cfg .. " poll --dry-run", { timeout = 60 })
    assert.are.equal(0, dry_rc)
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    -- every hostname the sim served (fetched straight from a monitor) is stored unchanged
    local mon = sim.info.monitors[1].url
    local crc, body = stack.run("curl -sS -m 10 " .. sq(mon .. "/publish/CacheStats?hc=1&stats=bandwidth"))
    assert.are.equal(0, crc)
    local payload = cjson.decode(body)
    local served = {}
    local n_served = 0
    for host in pairs(payload.caches) do
      -- InfluxDB 1.x cannot store a trailing backslash in a tag (lp_vectors.json): trimmed;
      -- a newline is written as the two characters backslash, n (lp_vectors "tag-newline").
      local expect = host:gsub("\\+$", ""):gsub("\n", "\\n")
      if expect ~= "" then served[expect] = true; n_served = n_served + 1 end
    end
    local r = query('SHOW TAG VALUES FROM "daily"."bandwidth" WITH KEY = "hostname"')
    local stored = {}
    for _, v in ipairs(r.series[1].values) do stored[v[2]] = true end
    local hostile = 0
    for h in pairs(served) do
      assert.truthy(stored[h], "stored hostname " .. h)
      if h:find("[ ,=\"\\\n]") or h:find("[\128-\255]") then hostile = hostile + 1 end
    end
    assert.truthy(hostile >= 3, "the payload had hostile names")
    assert.truthy(#dry > 0)
    -- the one alteration InfluxDB forces (a trailing backslash trimmed) is said, never silent
    assert.truthy(err:find("tag hostname=trailing-backslash\\ ends in a backslash, which InfluxDB 1.x cannot store", 1, true), err)
    sim:stop()
  end)

  it("SIGHUP re-reads Traffic Ops: a changed stats list is polled without a restart, and buffered points survive", function()
    local sim = start_sim("--cdns 1 --caches 3")
    sim.post("/sim/params?cacheStats=bandwidth&dsStats=kbps")
    local cfg = write_config(sim.to_url, "hup")
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. cfg .. " run", d .. "/tstats.log")
    assert.truthy(stack.wait_until(function() return count("bandwidth") >= 3 end, 20, 0.3))
    assert.are.equal(0, count("maxKbps"))
    sim.post("/sim/params?cacheStats=bandwidth,maxKbps&dsStats=kbps")
    ts:kill("HUP")
    assert.truthy(stack.wait_until(function() return count("maxKbps") >= 3 end, 20, 0.3), stack.read_file(d .. "/tstats.log"))
    local log = stack.read_file(d .. "/tstats.log")
    assert.truthy(log:find("HUP Received - reloading config", 1, true))
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    sim:stop()
  end)

  it("SIGTERM flushes every buffered point before exiting 0", function()
    -- no payload cache: two polls must never share timestamps (InfluxDB would merge them)
    local sim = start_sim("--cdns 1 --caches 5 --payload-cache-ms 0")
    local cfg = write_config(sim.to_url, "term", "publishing_interval = 3600,")
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. cfg .. " run", d .. "/tstats.log")
    assert.truthy(stack.wait_until(function()
      local _, n = (stack.read_file(d .. "/tstats.log") or ""):gsub("Collected %d+ cache stats", "")
      return n >= 3
    end, 20, 0.2))
    assert.are.equal(0, count("bandwidth"), "nothing published yet (publishing_interval 3600)")
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    local log = stack.read_file(d .. "/tstats.log")
    assert.truthy(log:find("Shutdown Request Received - Sending stored metrics then quitting", 1, true))
    local polls = select(2, log:gsub("Collected %d+ cache stats", ""))
    assert.are.equal(polls * 5, count("bandwidth"), "every collected sample was written:\n" .. log)
    local written = tonumber(log:match("written=(%d+)"))
    local points = tonumber(log:match("points=(%d+)"))
    assert.are.equal(points, written)
    sim:stop()
  end)

  it("polls an operator-declared endpoint with a Lua mapping and no C change", function()
    local sim = start_sim("--cdns 1 --caches 4 --ds 2")
    local cfg = write_config(sim.to_url, "crstates", [[endpoints = { { name = "CrStates", path = "/publish/CrStates",
      format = "lua", mapping = "mappings.crstates", db = "cache_stats", rp = "daily" } },]])
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("Collected 6 CrStates values for cdn1", 1, true), err)
    local n = query('SELECT count(available) FROM "daily"."crstates"')
    assert.are.equal(4, n.series[1].values[1][2])
    local r = query([[SELECT available, status FROM "daily"."crstates" WHERE hostname = 'edge-cdn1-1']])
    assert.are.equal(1, r.series[1].values[1][2])
    assert.are.equal("REPORTED - available", r.series[1].values[1][3])
    sim:stop()
  end)

  it("restarts during a Traffic Ops outage on the last good Traffic Ops data kept on disk", function()
    local sim = start_sim("--cdns 1 --caches 3")
    local cfg = write_config(sim.to_url, "lastgood")
    local rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    drop_all()
    sim.post("/sim/fault?spec=to-down")
    rc, _, err = stack.run(tstats_bin .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(3, rc, err)   -- written, but on cached Traffic Ops data: once's distinct exit code
    assert.truthy(err:find("using the last good data", 1, true), err)
    assert.are.equal(3, count("bandwidth"))
    sim:stop()
  end)

  it("asks Lua once per distinct name, not per sample", function()
    local sim = start_sim("--cdns 1 --caches 10 --ds 2")
    local cfg = write_config(sim.to_url, "luacalls")
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. cfg .. " --log-level info run", d .. "/tstats.log")
    assert.truthy(stack.wait_until(function()
      local _, n = (stack.read_file(d .. "/tstats.log") or ""):gsub("Collected %d+ cache stats", "")
      return n >= 4
    end, 30, 0.2))
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    local log = stack.read_file(d .. "/tstats.log")
    local polls = tonumber(log:match("stats: polls=(%d+)"))
    local points = tonumber(log:match(" points=(%d+)"))
    local calls = tonumber(log:match("lua_calls=(%d+)"))
    assert.truthy(polls >= 4)
    -- names: 10 caches + ~40 stats + 2 DS + ~60 DS keys: bounded, independent of the number of polls
    assert.truthy(calls < 250, "lua calls " .. calls)
    assert.truthy(points > calls * 3, ("points %d vs lua calls %d"):format(points, calls))
    sim:stop()
  end)
  it("streams Traffic Ops records as they arrive (http.request{records=}), never holding the answer", function()
    local sim = start_sim("--caches 3000 --ds 2 --cachegroups 2")
    local script = tmp .. "/records.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
      local to = %q
      local login = assert(tstats.http.request{ url = to .. "/api/5.0/user/login", method = "POST", cookies = true,
        body = '{"u":"admin","p":"twelve12"}', content_type = "application/json" })
      assert(login.status == 200, login.body)
      local fields = { "hostName", "tcpPort", "type", "cacheGroup" }
      local r = assert(tstats.http.request{ url = to .. "/api/5.0/servers", cookies = true, records = fields })
      assert(r.status == 200 and r.records, tostring(r.records_error))
      assert(#r.body == 65536, "only the head of the body is kept: " .. #r.body)
      local edges = 0
      for _, s in ipairs(r.records) do
        assert(math.type(s.tcpPort) == "integer" and s.interfaces == nil and s.domainName == nil)
        if s.type == "EDGE" then edges = edges + 1 end
      end
      local whole = tstats.json.decode_records(assert(tstats.http.request{ url = to .. "/api/5.0/servers", cookies = true }).body, fields)
      assert(#whole == #r.records and whole[#whole].hostName == r.records[#r.records].hostName)
      local tm = %q
      local bad = assert(tstats.http.request{ url = tm .. "/publish/CacheStats", records = fields })
      assert(bad.records == nil and bad.records_error:find("no \"response\""), tostring(bad.records_error))
      print(#r.records, edges)
    ]]):format(sim.to_url, sim.info.monitors[1].url))
    f:close()
    local rc, out, err = stack.run(tstats_bin .. " script " .. script, { env = { TSTATS_INFLUX_URL = influx.url }, timeout = 60 })
    assert.are.equal(0, rc, err)
    local n, edges = out:match("^(%d+)%s+(%d+)")
    n, edges = tonumber(n), tonumber(edges)
    assert.truthy(n and n >= 3000 and edges > 0 and edges < n, out)
    sim:stop()
  end)
end)
