-- sim_spec.lua: runtime spec of tstats-sim, the TO + TM simulator (test side, no tstats code).
-- Drives the real binary over HTTP with curl: login/cookies, servers, params, stats_summary,
-- CacheStats/DsStats shapes and TM's filter rules, every fault kind, gzip, and payload size/speed.
-- Run: lua5.4 /usr/bin/busted --run=runtime spec/runtime/sim_spec.lua  (TS_BUILD_DIR=build-xxx)
local stack = require("spec.runtime.stack")
local cjson = require("cjson")
local q = stack.quote

local SIM = stack.bin("tstats-sim")

-- Starts a sim with extra args; returns the process handle and the decoded ready file.
local function start_sim(args)
  local h = stack.sim_start(args, { timeout = 20 })
  return h, h.info
end

-- http(url, opts) -> status, body, headers (lower-cased names), curl exit code, seconds taken.
-- opts: method, data, jar (cookie file, read+written), gzip (send Accept-Encoding: gzip and
-- keep the body compressed), timeout (s), raw (keep body file path instead of content).
local function http(url, opts)
  opts = opts or {}
  local d = stack.tmpdir()
  local bodyf, hdrf = d .. "/body", d .. "/headers"
  local cmd = "curl -sS -g -o " .. q(bodyf) .. " -D " .. q(hdrf) .. " -w '%{http_code} %{time_total}'"
    .. " -m " .. tostring(opts.timeout or 20)
  if opts.method then cmd = cmd .. " -X " .. opts.method end
  if opts.data then cmd = cmd .. " --data-binary " .. q(opts.data) end
  if opts.jar then cmd = cmd .. " -b " .. q(opts.jar) .. " -c " .. q(opts.jar) end
  if opts.gzip then cmd = cmd .. " -H 'Accept-Encoding: gzip'" end
  local rc, out = stack.run(cmd .. " " .. q(url))
  local code, secs = out:match("^(%d+) ([%d%.]+)")
  local headers = {}
  for line in (stack.read_file(hdrf) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then
      k = k:lower()
      headers[k] = headers[k] and (headers[k] .. "\n" .. v) or v
    end
  end
  local body = opts.raw and bodyf or (stack.read_file(bodyf) or "")
  return tonumber(code), body, headers, rc, tonumber(secs)
end

local function json(body)
  local ok, t = pcall(cjson.decode, body)
  assert(ok, "not JSON: " .. tostring(body):sub(1, 200))
  return t
end

local function post_fault(to, params)
  local st, body = http(to .. "/sim/fault?" .. params, { method = "POST" })
  return st, body
end

local function keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function now_ms() return math.floor(stack.now() * 1000) end

local CIAB_CACHE = {}
do
  local prof = json(stack.read_file(stack.root() .. "/spec/fixtures/to/ciab_profile_TRAFFIC_STATS.json"))
  for _, p in ipairs(prof.params) do
    if p.name == "CacheStats" then CIAB_CACHE[#CIAB_CACHE + 1] = p.value end
  end
end

describe("tstats-sim", function()
  local sim, info, to, mon0, mon1, offline
  local jar

  setup(function()
    sim, info = start_sim("--caches 20 --payload-cache-ms 200 --seed 7")
    to = info.to_url
    for _, m in ipairs(info.monitors) do
      if m.index == 0 then mon0 = m.url elseif m.index == 1 then mon1 = m.url end
      if m.status == "OFFLINE" then offline = m end
    end
    jar = stack.tmpdir() .. "/jar"
  end)

  teardown(function()
    if sim then
      local rc = sim:stop()
      assert.are.equal(0, rc) -- clean exit on SIGTERM
      assert.is_nil(stack.read_file(sim.ready)) -- ready file removed on exit
    end
    stack.cleanup_all()
  end)

  it("writes a ready file with TO and one port per monitor", function()
    assert.are.equal(sim.pid, math.tointeger(info.pid))
    assert.truthy(to:match("^http://127%.0%.0%.1:%d+$"))
    assert.are.equal(3, #info.monitors) -- 2 ONLINE + the OFFLINE one
    local ports = {}
    for _, m in ipairs(info.monitors) do
      assert.are.equal("cdn1", m.cdn)
      assert.are.equal("http://127.0.0.1:" .. math.tointeger(m.port), m.url)
      assert.is_nil(ports[m.port])
      ports[m.port] = true
    end
    assert.truthy(offline)
  end)

  describe("Traffic Ops", function()
    it("refuses API calls without a session and wrong passwords", function()
      local st, body = http(to .. "/api/5.0/servers")
      assert.are.equal(401, st)
      st, body = http(to .. "/api/5.0/user/login", { data = '{"u":"admin","p":"nope"}' })
      assert.are.equal(401, st)
      assert.are.equal("Invalid username or password.", json(body).alerts[1].text)
      st = http(to .. "/api/5.0/user/login", { data = 'not json' })
      assert.are.equal(400, st)
    end)

    it("logs in with cookies and counts logins", function()
      local before = json(select(2, http(to .. "/sim/stats"))).to.logins
      local st, body, hdr = http(to .. "/api/5.0/user/login", { data = '{"u":"admin","p":"twelve12"}', jar = jar })
      assert.are.equal(200, st)
      local a = json(body).alerts[1]
      assert.are.same({ text = "Successfully logged in.", level = "success" }, a)
      assert.truthy(hdr["set-cookie"]:find("mojolicious=%x+; Path=/"))
      assert.truthy(hdr["set-cookie"]:find("access_token=%x+;"))
      assert.truthy(hdr["set-cookie"]:find("HttpOnly"))
      st = http(to .. "/api/5.0/servers", { jar = jar })
      assert.are.equal(200, st)
      local stats = json(select(2, http(to .. "/sim/stats")))
      assert.are.equal(before + 1, stats.to.logins)
    end)

    it("expires sessions on demand", function()
      local j2 = stack.tmpdir() .. "/jar2"
      assert.are.equal(200, (http(to .. "/api/5.0/user/login", { data = '{"u":"admin","p":"twelve12"}', jar = j2 })))
      assert.are.equal(200, (http(to .. "/sim/expire-sessions", { method = "POST" })))
      assert.are.equal(401, (http(to .. "/api/5.0/servers", { jar = j2 })))
      -- re-login for the following tests
      assert.are.equal(200, (http(to .. "/api/5.0/user/login", { data = '{"u":"admin","p":"twelve12"}', jar = jar })))
    end)

    it("lists caches and monitors in the v5 servers shape", function()
      local st, body = http(to .. "/api/5.0/servers", { jar = jar })
      assert.are.equal(200, st)
      local servers = json(body).response
      local edges, mids, online_tm, offline_tm, dotted = 0, 0, 0, 0, false
      for _, s in ipairs(servers) do
        assert.is_string(s.hostName)
        assert.is_string(s.domainName)
        assert.is_number(s.tcpPort)
        assert.are.equal("cdn1", s.cdn)
        assert.is_string(s.cacheGroup)
        assert.is_number(s.id)
        assert.is_table(s.profiles)
        assert.is_table(s.interfaces)
        if s.cacheGroup:find(".", 1, true) then dotted = true end
        if s.type == "EDGE" then
          edges = edges + 1
          assert.truthy(s.hostName:match("^edge%-cdn1%-%d+$"))
          assert.truthy(s.status == "REPORTED" or s.status == "ONLINE")
        elseif s.type == "MID" then
          mids = mids + 1
          assert.truthy(s.hostName:match("^mid%-cdn1%-%d+$"))
        elseif s.type == "RASCAL" then
          assert.are.equal("127.0.0.1", s.hostName)
          assert.are.equal("", s.domainName)
          -- http://<hostName>:<tcpPort> is a monitor of the sim
          local found
          for _, m in ipairs(info.monitors) do
            if math.tointeger(m.port) == math.tointeger(s.tcpPort) then found = m end
          end
          assert.truthy(found, "RASCAL port not in ready file")
          if s.status == "ONLINE" then online_tm = online_tm + 1 else
            assert.are.equal("OFFLINE", s.status)
            assert.are.equal("OFFLINE", found.status)
            offline_tm = offline_tm + 1
          end
        end
      end
      assert.are.equal(20, edges + mids)
      assert.are.equal(16, edges)
      assert.are.equal(2, online_tm)
      assert.are.equal(1, offline_tm)
      assert.is_true(dotted)
      st, body = http(to .. "/api/5.0/servers?type=RASCAL", { jar = jar })
      assert.are.equal(3, #json(body).response)
    end)

    it("serves the CiaB TRAFFIC_STATS parameters and can drop them", function()
      local st, body = http(to .. "/api/5.0/profiles/name/TRAFFIC_STATS/parameters", { jar = jar })
      assert.are.equal(200, st)
      local params = json(body).response
      assert.are.equal(45, #params)
      local cs, ds, frags = {}, 0, false
      for _, p in ipairs(params) do
        assert.is_number(p.id)
        assert.are.equal("traffic_stats.config", p.configFile)
        assert.is_false(p.secure)
        if p.name == "CacheStats" then cs[#cs + 1] = p.value else
          assert.are.equal("DsStats", p.name)
          ds = ds + 1
        end
        if p.value == "ats.proxy.process.cache.frags_per_doc.3+" then frags = true end
      end
      assert.are.equal(37, #cs)
      assert.are.equal(8, ds)
      assert.is_true(frags)
      table.sort(cs)
      local want = { table.unpack(CIAB_CACHE) }
      table.sort(want)
      assert.are.same(want, cs)
      http(to .. "/sim/params?mode=none", { method = "POST" })
      assert.are.equal(0, #json(select(2, http(to .. "/api/5.0/profiles/name/TRAFFIC_STATS/parameters", { jar = jar }))).response)
      http(to .. "/sim/params?cacheStats=bandwidth,maxKbps&dsStats=kbps", { method = "POST" })
      assert.are.equal(3, #json(select(2, http(to .. "/api/5.0/profiles/name/TRAFFIC_STATS/parameters", { jar = jar }))).response)
      http(to .. "/sim/params?mode=ciab", { method = "POST" })
      assert.are.equal(45, #json(select(2, http(to .. "/api/5.0/profiles/name/TRAFFIC_STATS/parameters", { jar = jar }))).response)
    end)

    it("stores stats_summary rows and answers lastSummaryDate", function()
      local url = to .. "/api/5.0/stats_summary"
      local st, body = http(url .. "?lastSummaryDate=true&statName=daily_maxgbps", { jar = jar })
      assert.are.equal(200, st)
      assert.are.equal(cjson.null, json(body).response.summaryTime)
      local post = stack.read_file(stack.root() .. "/spec/fixtures/synthesized/to_v5_stats_summary_POST_body_as_sent_by_traffic_stats.json")
      st, body = http(url, { data = post, jar = jar })
      assert.are.equal(200, st)
      assert.are.equal("Stats Summary was successfully created", json(body).alerts[1].text)
      st, body = http(url .. "?lastSummaryDate=true&statName=daily_maxgbps", { jar = jar })
      assert.are.equal("2020-05-14T00:01:00Z", json(body).response.summaryTime)
      st, body = http(url .. "?lastSummaryDate=true&statName=daily_bytesserved", { jar = jar })
      assert.are.equal(cjson.null, json(body).response.summaryTime)
      st, body = http(url, { data = '{"statName":"daily_bytesserved","statValue":1.5,"summaryTime":"2020-05-15 00:02:00+02"}', jar = jar })
      assert.are.equal(200, st)
      st, body = http(url, { data = '{"statName":"x","statValue":1,"summaryTime":"yesterday"}', jar = jar })
      assert.are.equal(400, st)
      assert.are.equal("invalid timestamp given for summaryTime", json(body).alerts[1].text)
      st, body = http(url, { jar = jar })
      local rows = json(body).response
      assert.are.equal(2, #rows)
      assert.are.same({ cdnName = "CDN-in-a-Box", deliveryServiceName = "all", statName = "daily_maxgbps",
        statValue = 12.345678, summaryTime = "2020-05-14T00:01:00Z", statDate = "2020-05-13" }, rows[1])
      assert.are.equal("all", rows[2].cdnName)
      assert.are.equal("2020-05-14T22:02:00Z", rows[2].summaryTime)
      assert.are.equal(cjson.null, rows[2].statDate)
    end)
  end)

  describe("Traffic Monitor CacheStats", function()
    it("serves the legacy shape with Go-formatted string values", function()
      local t0 = now_ms()
      local st, body, hdr = http(mon0 .. "/publish/CacheStats")
      assert.are.equal(200, st)
      assert.are.equal("application/json", hdr["content-type"])
      local d = json(body)
      assert.truthy(d.date:match("^%a%a%a %a%a%a %d%d %d%d:%d%d:%d%d UTC %d%d%d%d$"), d.date)
      assert.is_string(d.pp)
      assert.are.equal(20, keys(d.caches))
      local c = d.caches["edge-cdn1-1"]
      assert.truthy(c)
      for name, arr in pairs(c) do
        assert.are.equal(1, #arr, name)
        assert.is_string(arr[1].value, name)
        local t = math.tointeger(arr[1].time)
        assert.truthy(t and t <= t0 + 1000 and t > t0 - 5000, name .. " time " .. tostring(arr[1].time))
        assert.truthy(math.tointeger(arr[1].span) >= 1)
      end
      -- 37 CiaB + 3 synthetic, computed/non-numeric extras, interface stats
      for _, s in ipairs(CIAB_CACHE) do assert.truthy(c[s], s) end
      assert.truthy(c["ats.proxy.process.sim.counter_3"])
      assert.are.equal("REPORTED", c.status[1].value)
      assert.are.equal("false", c["error-string"][1].value)
      assert.truthy(c.isAvailable[1].value:match("^{.*}$"))
      for _, s in ipairs({ "inBytes", "outBytes", "speed" }) do assert.truthy(c[s][1].value:match("^%d+$")) end
      local bw = tonumber(c.bandwidth[1].value)
      assert.truthy(c.bandwidth[1].value:match("^%d+$"))
      assert.truthy(bw >= 1e6 * 0.7 and bw <= 1.3e7, "bandwidth " .. bw)
      assert.truthy(tonumber(c.maxKbps[1].value) >= bw)
      -- float64 ATS counters: %v style, exponent form from 1e6 up, e.g. "2.62200722e+10"
      local big = c["ats.proxy.process.cache.bytes_total"][1].value
      assert.truthy(big:match("^%d%.?%d*e%+%d%d$"), big)
      local sm = c["ats.proxy.process.http.current_client_connections"][1].value
      assert.truthy(sm:match("^%d+$") or sm:match("e%+%d%d$"), sm)
    end)

    it("returns hc history entries, newest first", function()
      local d = json(select(2, http(mon0 .. "/publish/CacheStats?hc=3")))
      local arr = d.caches["mid-cdn1-1"]["ats.proxy.process.cache.lookup.success"]
      assert.are.equal(3, #arr)
      assert.truthy(arr[1].time > arr[2].time and arr[2].time > arr[3].time)
      assert.truthy(tonumber(arr[1].value) >= tonumber(arr[2].value))
      d = json(select(2, http(mon0 .. "/publish/CacheStats?hc=0")))
      assert.are.equal(5, #d.caches["mid-cdn1-1"].bandwidth) -- 0 = all (TM keeps 5)
    end)

    it("filters stats exactly or by substring, keeping inBytes/outBytes/speed", function()
      local d = json(select(2, http(mon0 .. "/publish/CacheStats?hc=1&stats=bandwidth")))
      local c = d.caches["edge-cdn1-2"]
      assert.are.equal(4, keys(c))
      assert.truthy(c.bandwidth and c.inBytes and c.outBytes and c.speed)
      assert.are.equal("hc=[1], stats=[bandwidth]", d.pp)
      d = json(select(2, http(mon0 .. "/publish/CacheStats?stats=wrap_count&wildcard=1")))
      assert.are.equal(5, keys(d.caches["edge-cdn1-2"])) -- volume_1/2.wrap_count + 3
      d = json(select(2, http(mon0 .. "/publish/CacheStats?stats=wrap_count&wildcard=0")))
      assert.are.equal(3, keys(d.caches["edge-cdn1-2"]))
      -- case-sensitive: "bandwidth" does not match availableBandwidthInKbps
      d = json(select(2, http(mon0 .. "/publish/CacheStats?stats=bandwidth&wildcard=true")))
      assert.is_nil(d.caches["edge-cdn1-2"].availableBandwidthInKbps)
      assert.truthy(d.caches["edge-cdn1-2"].bandwidth)
    end)

    it("matches frags_per_doc.3+ only when the + is URL-encoded", function()
      local base = mon0 .. "/publish/CacheStats?wildcard=1&stats=ats.proxy.process.cache.frags_per_doc.3"
      local d = json(select(2, http(base .. "%2B")))
      assert.truthy(d.caches["edge-cdn1-1"]["ats.proxy.process.cache.frags_per_doc.3+"])
      d = json(select(2, http(base .. "+")))
      assert.is_nil(d.caches["edge-cdn1-1"]["ats.proxy.process.cache.frags_per_doc.3+"])
      assert.are.equal(3, keys(d.caches["edge-cdn1-1"]))
    end)

    it("treats empty-valued params as host filters (empty stats= returns no caches)", function()
      local d = json(select(2, http(mon0 .. "/publish/CacheStats?hc=1&wildcard=1&stats=")))
      assert.are.equal(0, keys(d.caches))
      d = json(select(2, http(mon0 .. "/publish/CacheStats?edge-cdn1-3&stats=bandwidth")))
      assert.are.equal(1, keys(d.caches))
      assert.truthy(d.caches["edge-cdn1-3"])
      d = json(select(2, http(mon0 .. "/publish/CacheStats/mid-cdn1-2?stats=bandwidth")))
      assert.are.equal(1, keys(d.caches))
      d = json(select(2, http(mon0 .. "/publish/CacheStats?type=mid&stats=bandwidth")))
      assert.are.equal(4, keys(d.caches))
      local st, body = http(mon0 .. "/publish/CacheStats?foo=1")
      assert.are.equal(400, st)
      assert.are.equal("invalid query parameter 'foo'", body)
      assert.are.equal(400, (http(mon0 .. "/publish/CacheStats?type=router")))
    end)

    it("moves values over time: counters grow, bandwidth changes", function()
      local url = mon0 .. "/publish/CacheStats?stats=ats.proxy.process.cache.ram_cache.hits,bandwidth"
      local a = json(select(2, http(url))).caches["edge-cdn1-4"]
      stack.sleep(1.3)
      local b = json(select(2, http(url))).caches["edge-cdn1-4"]
      assert.truthy(b.bandwidth[1].time > a.bandwidth[1].time)
      local k = "ats.proxy.process.cache.ram_cache.hits"
      assert.truthy(tonumber(b[k][1].value) > tonumber(a[k][1].value))
      assert.truthy(tonumber(b.outBytes[1].value) > tonumber(a.outBytes[1].value))
      assert.are_not.equal(a.bandwidth[1].value, b.bandwidth[1].value)
    end)

    it("gzips when asked", function()
      local st, path, hdr = http(mon0 .. "/publish/CacheStats", { gzip = true, raw = true })
      assert.are.equal(200, st)
      assert.are.equal("gzip", hdr["content-encoding"])
      local rc, out = stack.run("gzip -dc " .. q(path))
      assert.are.equal(0, rc)
      assert.are.equal(20, keys(json(out).caches))
      st, path, hdr = http(mon0 .. "/publish/CacheStats", { raw = true })
      assert.is_nil(hdr["content-encoding"])
    end)
  end)

  describe("Traffic Monitor DsStats and others", function()
    it("serves DsStats with location/type/total keys and TM's quirks", function()
      local st, body = http(mon0 .. "/publish/DsStats")
      assert.are.equal(200, st)
      local d = json(body)
      assert.truthy(d.date and d.pp)
      assert.are.equal(5, keys(d.deliveryService))
      local ds = d.deliveryService["ds-1"]
      local t
      for k, arr in pairs(ds) do
        assert.are.equal(1, #arr, k)
        assert.is_nil(arr[1].span)
        t = t or arr[1].time
        assert.are.equal(t, arr[1].time, "one time for every stat")
        if k == "disabledLocations" then assert.is_table(arr[1].value) else assert.is_string(arr[1].value, k) end
      end
      assert.truthy(ds["location.us.east-3.kbps"], "dotted cache group")
      assert.truthy(ds["location.location.cg-1.isAvailable"])
      assert.truthy(ds["location.total.isAvailable"])
      assert.truthy(ds["type.EDGE.kbps"] and ds["type.MID.kbps"] and ds["total.kbps"])
      assert.truthy(ds["total.kbps"][1].value:match("^%d+$"))
      assert.truthy(ds["total.status_2xx"][1].value:match("^%d+$"))
      assert.truthy(ds["total.tps_total"][1].value:match("^%d+%.%d%d%d%d%d%d$"))
      -- total = sum of type.* (integers)
      assert.are.equal(tonumber(ds["total.out_bytes"][1].value),
        tonumber(ds["type.EDGE.out_bytes"][1].value) + tonumber(ds["type.MID.out_bytes"][1].value))
    end)

    it("filters DsStats on the un-prefixed stat name and by DS name", function()
      local d = json(select(2, http(mon0 .. "/publish/DsStats?hc=1&wildcard=1&stats=kbps,tps_total")))
      for _, ds in pairs(d.deliveryService) do
        for k in pairs(ds) do assert.truthy(k:match("%.kbps$") or k:match("%.tps_total$"), k) end
      end
      d = json(select(2, http(mon0 .. "/publish/DsStats?ds-2&stats=kbps")))
      assert.are.equal(1, keys(d.deliveryService))
      assert.truthy(d.deliveryService["ds-2"])
      d = json(select(2, http(mon0 .. "/publish/DsStats?hc=1&wildcard=1&stats=")))
      assert.are.equal(0, keys(d.deliveryService))
      assert.are.equal(400, (http(mon0 .. "/publish/DsStats?bogus=1")))
    end)

    it("serves CrStates and cache-statuses", function()
      local d = json(select(2, http(mon1 .. "/publish/CrStates")))
      assert.are.equal(20, keys(d.caches))
      assert.is_true(d.caches["edge-cdn1-1"].isAvailable)
      assert.truthy(d.deliveryServices["ds-1"])
      d = json(select(2, http(mon1 .. "/api/cache-statuses")))
      assert.are.equal(20, keys(d))
      assert.are.equal("EDGE", d["edge-cdn1-1"].type)
      assert.is_number(d["edge-cdn1-1"].bandwidth_kbps)
    end)

    it("counts requests per monitor (the OFFLINE one separately)", function()
      http(offline.url .. "/publish/CacheStats?stats=bandwidth")
      local s = json(select(2, http(to .. "/sim/stats")))
      local off, m0
      for _, m in ipairs(s.monitors) do
        if m.status == "OFFLINE" then off = m end
        if m.index == 0 then m0 = m end
      end
      assert.are.equal(1, off.requests.CacheStats)
      assert.truthy(m0.requests.CacheStats >= 10)
      assert.truthy(m0.requests.DsStats >= 3)
    end)
  end)

  describe("faults", function()
    after_each(function()
      assert.are.equal(200, (post_fault(to, "kind=none")))
    end)

    it("503 on one monitor only", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=503")))
      local st, body = http(mon0 .. "/publish/CacheStats")
      assert.are.equal(503, st)
      assert.are.equal("Service Unavailable", body)
      assert.are.equal(200, (http(mon1 .. "/publish/CacheStats?stats=bandwidth")))
    end)

    it("503-start answers 503 until the delay has passed", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:1&kind=503-start&seconds=1")))
      assert.are.equal(503, (http(mon1 .. "/publish/DsStats")))
      stack.sleep(1.1)
      assert.are.equal(200, (http(mon1 .. "/publish/DsStats")))
    end)

    it("slow delays one monitor without blocking another", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=slow&ms=1200")))
      local d = stack.tmpdir()
      -- the slow request runs in the background while the other monitor is asked
      local rc, out = stack.run("curl -s -o /dev/null -w '%{time_total}' " .. q(mon0 .. "/publish/CacheStats")
        .. " > " .. q(d .. "/slow") .. " & sleep 0.2; curl -s -o /dev/null -w '%{time_total}' "
        .. q(mon1 .. "/publish/CacheStats") .. "; wait")
      assert.are.equal(0, rc)
      local fast, slow = tonumber(out), tonumber(stack.read_file(d .. "/slow"))
      assert.truthy(slow >= 1.2, "slow " .. tostring(slow))
      assert.truthy(fast < 0.8, "fast " .. tostring(fast))
    end)

    it("hang accepts and never answers, until cleared", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=hang")))
      local _, _, _, rc = http(mon0 .. "/publish/CacheStats", { timeout = 1 })
      assert.are.equal(28, rc) -- curl: operation timed out
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=none")))
      assert.are.equal(200, (http(mon0 .. "/publish/CacheStats?stats=bandwidth")))
    end)

    it("dead closes the port; none reopens the same port", function()
      assert.are.equal(200, (post_fault(to, "spec=dead@cdn1:1")))
      local _, _, _, rc = http(mon1 .. "/publish/CacheStats")
      assert.are.equal(7, rc) -- curl: connection refused
      local s = json(select(2, http(to .. "/sim/stats")))
      assert.is_false(s.monitors[2].listening)
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:1&kind=none")))
      assert.are.equal(200, (http(mon1 .. "/publish/CacheStats?stats=bandwidth")))
    end)

    it("truncate sends half a body with a matching Content-Length", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=truncate")))
      local st, body, hdr, rc = http(mon0 .. "/publish/CacheStats")
      assert.are.equal(0, rc)
      assert.are.equal(200, st)
      assert.are.equal(#body, tonumber(hdr["content-length"]))
      assert.is_false((pcall(cjson.decode, body)))
      local full = http(mon1 .. "/publish/CacheStats")
      assert.are.equal(200, full)
    end)

    it("cut drops the connection in the middle of the announced body", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=cut")))
      local _, _, _, rc = http(mon0 .. "/publish/CacheStats")
      assert.are.equal(18, rc) -- curl: partial file
    end)

    it("invalid serves garbage with a 200", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=invalid")))
      for _ = 1, 3 do
        local st, body = http(mon0 .. "/publish/CacheStats")
        assert.are.equal(200, st)
        assert.is_false((pcall(cjson.decode, body)), body)
      end
    end)

    it("huge pads the payload to the requested size", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=huge&mb=20")))
      local st, path = http(mon0 .. "/publish/CacheStats?stats=bandwidth", { raw = true, timeout = 60 })
      assert.are.equal(200, st)
      local rc, size = stack.run("wc -c < " .. q(path))
      assert.are.equal(0, rc)
      assert.truthy(tonumber(size) >= 20 * 1024 * 1024, size)
      local d = json(stack.read_file(path))
      assert.truthy(d.caches["huge-cdn1-1"].bandwidth)
    end)

    it("hostile names are valid JSON full of separators and escapes", function()
      assert.are.equal(200, (post_fault(to, "monitor=cdn1:0&kind=hostile")))
      local d = json(select(2, http(mon0 .. "/publish/CacheStats?stats=bandwidth")))
      assert.truthy(d.caches["edge with space"])
      assert.truthy(d.caches["edge\"quote"])
      assert.truthy(d.caches["edge\nnewline"])
      assert.truthy(d.caches["trailing-backslash\\"])
      assert.truthy(d.caches["edge-ünïcödé-日本"])
      assert.truthy(d.caches["edge-cdn1-1"]["ats.hostile.edge,comma"], "hostile stats bypass the filter")
      assert.are.equal("NaN", d.caches["edge-cdn1-1"]["ats.hostile.edge with space"][1].value)
      local ds = json(select(2, http(mon0 .. "/publish/DsStats?stats=kbps")))
      assert.truthy(ds.deliveryService["ds with space"])
      assert.truthy(ds.deliveryService["ds-1"]["location.cg,comma=eq.kbps"])
    end)

    it("to-down answers 503 on the API but keeps /sim/ working; to-slow delays", function()
      assert.are.equal(200, (post_fault(to, "kind=to-down")))
      assert.are.equal(503, (http(to .. "/api/5.0/user/login", { data = '{"u":"admin","p":"twelve12"}' })))
      assert.are.equal(200, (post_fault(to, "kind=none&monitor=to")))
      assert.are.equal(200, (post_fault(to, "kind=to-slow&ms=600")))
      local st, _, _, _, secs = http(to .. "/api/5.0/ping")
      assert.are.equal(200, st)
      assert.truthy(secs >= 0.6, secs)
    end)

    it("rejects unknown kinds and targets", function()
      assert.are.equal(400, (post_fault(to, "kind=explode")))
      assert.are.equal(400, (post_fault(to, "monitor=cdn9:0&kind=503")))
      assert.are.equal(400, (post_fault(to, "kind=slow")))
    end)
  end)
end)

describe("tstats-sim options", function()
  teardown(function() stack.cleanup_all() end)

  it("runs several CDNs with startup faults, custom credentials and no params", function()
    local sim, info = start_sim("--cdns 2 --monitors-per-cdn 1 --caches 10 --user ops --password s3cret"
      .. " --no-params --fault 503-start:2@cdn1 --fault slow:300@cdn2:0")
    local urls = {}
    for _, m in ipairs(info.monitors) do urls[m.cdn .. ":" .. math.tointeger(m.index)] = m.url end
    assert.truthy(urls["cdn1:0"] and urls["cdn2:0"] and urls["cdn1:1"] and urls["cdn2:1"])
    assert.are.equal(503, (http(urls["cdn1:0"] .. "/publish/CacheStats")))
    local st, _, _, _, secs = http(urls["cdn2:0"] .. "/publish/CacheStats")
    assert.are.equal(200, st)
    assert.truthy(secs >= 0.3)
    assert.truthy(stack.wait_until(function() return http(urls["cdn1:0"] .. "/publish/CacheStats") == 200 end, 5))
    local d = json(select(2, http(urls["cdn2:0"] .. "/publish/CacheStats?stats=bandwidth")))
    assert.truthy(d.caches["edge-cdn2-1"])
    assert.is_nil(d.caches["edge-cdn1-1"])
    local jar = stack.tmpdir() .. "/jar"
    assert.are.equal(401, (http(info.to_url .. "/api/5.0/user/login", { data = '{"u":"admin","p":"twelve12"}' })))
    assert.are.equal(200, (http(info.to_url .. "/api/5.0/user/login", { data = '{"u":"ops","p":"s3cret"}', jar = jar })))
    local params = json(select(2, http(info.to_url .. "/api/5.0/profiles/name/TRAFFIC_STATS/parameters", { jar = jar })))
    assert.are.equal(0, #params.response)
    local servers = json(select(2, http(info.to_url .. "/api/5.0/servers?type=RASCAL", { jar = jar }))).response
    assert.are.equal(4, #servers)
    assert.are.equal(0, sim:stop())
  end)

  it("refuses bad options", function()
    local rc = stack.run(q(SIM) .. " --caches many")
    assert.are.equal(2, rc)
    rc = stack.run(q(SIM) .. " --fault explode --ready-file /dev/null")
    assert.are.equal(2, rc)
  end)
end)

describe("tstats-sim as a load generator", function()
  teardown(function() stack.cleanup_all() end)

  it("generates 2000 caches x 40 stats and reports its generation time", function()
    local rc, out = stack.run(q(SIM) .. " --caches 2000 --stats 40 --bench 10", { timeout = 120 })
    assert.are.equal(0, rc)
    local unfiltered, ciab
    for line in out:gmatch("[^\n]+") do
      local t = json(line)
      if t.stats_filter == 0 then unfiltered = t else ciab = t end
    end
    print(string.format("\n[sim bench] 2000 caches unfiltered: %d values, %.1f MB, best %.1f ms, mean %.1f ms, gzip %.1f ms -> %.1f MB",
      unfiltered.values, unfiltered.bytes / 1e6, unfiltered.best_ms, unfiltered.mean_ms, unfiltered.gzip_ms, unfiltered.gzip_bytes / 1e6))
    print(string.format("[sim bench] 2000 caches CiaB filter: %d values, %.1f MB, best %.1f ms, mean %.1f ms",
      ciab.values, ciab.bytes / 1e6, ciab.best_ms, ciab.mean_ms))
    assert.are.equal(2000 * 40, ciab.values) -- 37 CiaB + inBytes/outBytes/speed
    assert.truthy(ciab.bytes > 5e6)
    assert.truthy(unfiltered.bytes > 10e6)
    -- Speed is the benchmark's business (scripts/bench prints these figures),
    -- never a test's: a loaded machine must not fail the suite.
    assert.truthy(unfiltered.best_ms > 0 and ciab.best_ms > 0)
  end)

  it("serves a 2000x40 payload over HTTP and caches it", function()
    local sim, info = start_sim("--caches 2000 --stats 40 --payload-cache-ms 5000")
    local url = info.monitors[1].url .. "/publish/CacheStats?hc=1&wildcard=1&stats="
      .. table.concat(CIAB_CACHE, ","):gsub("%+", "%%2B")
    local st, path, _, _, first = http(url, { raw = true })
    assert.are.equal(200, st)
    local _, size = stack.run("wc -c < " .. q(path))
    local _, nvals = stack.run("grep -o -F '{\"value\":' " .. q(path) .. " | wc -l")
    local _, _, _, _, second = http(url, { raw = true })
    local st3, gzpath, hdr, _, third = http(url, { raw = true, gzip = true })
    local _, gzsize = stack.run("wc -c < " .. q(gzpath))
    local s = json(select(2, http(info.to_url .. "/sim/stats")))
    print(string.format("\n[sim http] 2000x40: %d values, %d bytes; first %.3f s, cached %.3f s, gzip %.3f s (%d bytes); generator %d us, cache hits %d",
      tonumber(nvals), tonumber(size), first, second, third, tonumber(gzsize), s.generator.last_us, s.generator.cache_hits))
    assert.are.equal(80000, tonumber(nvals))
    assert.are.equal(200, st3)
    assert.are.equal("gzip", hdr["content-encoding"])
    assert.truthy(s.generator.cache_hits >= 2)
    assert.are.equal(1, s.generator.count)
    assert.are.equal(0, sim:stop())
  end)

  it("serves 1.28M points (~125 MB) in one payload", function()
    local sim, info = start_sim("--caches 32000 --stats 40")
    local url = info.monitors[1].url .. "/publish/CacheStats?hc=1&wildcard=1&stats="
      .. table.concat(CIAB_CACHE, ","):gsub("%+", "%%2B")
    local st, path, _, rc, secs = http(url, { raw = true, timeout = 120 })
    assert.are.equal(0, rc)
    assert.are.equal(200, st)
    local _, size = stack.run("wc -c < " .. q(path))
    local _, nvals = stack.run("grep -o -F '{\"value\":' " .. q(path) .. " | wc -l")
    local s = json(select(2, http(info.to_url .. "/sim/stats")))
    print(string.format("\n[sim http] 32000x40: %d values, %.1f MB in %.2f s (generator %.1f ms)",
      tonumber(nvals), tonumber(size) / 1e6, secs, s.generator.last_us / 1000))
    assert.are.equal(1280000, tonumber(nvals))
    assert.truthy(tonumber(size) > 100e6)
    os.remove(path)
    assert.are.equal(0, sim:stop())
  end)
end)
