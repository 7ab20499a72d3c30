-- Runtime spec (issue 3, test side): the real tstats binary against tstats-sim in
-- fixture mode (the synthesized legacy TM payloads, times shifted to now) and a real
-- influxd: exactly which points are stored (measurement, full tag set, float value,
-- timestamp), ATC's own wire lines among them, non-numeric values skipped or zeroed,
-- and `tstats poll --dry-run` printing the same lines.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats_bin = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")
local FIX = stack.root() .. "/spec/fixtures/synthesized/"
local CS = FIX .. "tm_CacheStats_legacy_hc1_wildcard.json"
local DS_ALL = FIX .. "tm_DsStats_unfiltered_one_ds.json"
local DS_WC = FIX .. "tm_DsStats_wildcard.json"
local ATC_LP = { FIX .. "influx_write_cache_stats.lp", FIX .. "influx_write_deliveryservice_stats.lp" }
local CDN = "CDN-in-a-Box"
-- What the simulator's TO says about the fixture's caches (ATC's expected output uses these).
local SERVERS = {
  edge = { cachegroup = "CDN_in_a_Box_Edge", type = "EDGE" },
  mid = { cachegroup = "CDN_in_a_Box_Mid", type = "MID" },
}

local influx, tmp
local sq = stack.quote

local function start_sim(cs, ds, extra)
  local h = stack.sim_start("--fixture-cachestats " .. sq(cs) .. " --fixture-dsstats " .. sq(ds) .. " " .. (extra or ""))
  h.delta = math.tointeger(h.info.fixture_time_delta_ms)
  assert(h.delta, "ready JSON has fixture_time_delta_ms: " .. stack.read_file(h.ready))
  return h
end

local function curl(args)
  local rc, out, err = stack.run("curl -sS -m 10 " .. args)
  assert(rc == 0, "curl " .. args .. ": " .. err)
  return out
end

-- The oracle of the sim's shift, written independently of its C: every "time" integer + delta.
local function shift_text(text, delta)
  return (text:gsub('("time"%s*:%s*)(%-?%d+)', function(pre, n)
    return pre .. tostring(math.tointeger(tonumber(n)) + delta)
  end))
end

-- A string TM value that tstats must store: decimal numbers only (no hex, NaN, Inf).
local function numeric(s)
  if type(s) ~= "string" or s:match("^%s*[-+]?0[xX]") then return nil end
  local v = tonumber(s)
  if v == nil or v ~= v or v == math.huge or v == -math.huge then return nil end
  return v + 0.0
end

-- Stock CacheStats measurement (lua/mappings/README.md): first ".bandwidth" -> ".kbps", "-" -> "_".
local function cs_measurement(name)
  local i, j = name:find(".bandwidth", 1, true)
  if i then name = name:sub(1, i - 1) .. ".kbps" .. name:sub(j + 1) end
  return (name:gsub("-", "_"))
end

-- Stock DsStats key rules (lua/mappings/README.md): parsed from the right; unprefixed
-- keys, prefixed isAvailable/error-string (TM's quirk keys) and location.total.* are dropped.
local function ds_key(key)
  local prefix, stat = key:match("^(.*)%.([^.]*)$")
  if not prefix or stat == "" or stat == "isAvailable" or stat == "error-string" then return nil end
  if prefix == "total" then return stat, { cachegroup = "total" } end
  local t = prefix:match("^type%.(.+)$")
  if t then return stat, { cachegroup = "all", type = t } end
  local cg = prefix:match("^location%.(.+)$")
  if cg and cg ~= "total" then return stat, { cachegroup = cg } end
  return nil
end

local function point_key(db, m, tags, t)
  assert(math.type(t) == "integer", "integer timestamp")
  local ks = {}
  for k, v in pairs(tags) do ks[#ks + 1] = k .. "=" .. v end
  table.sort(ks)
  return db .. "|" .. m .. "|" .. table.concat(ks, ",") .. "|" .. t
end

-- Every point the fixtures should produce: {key -> value}, count, and the
-- non-numeric samples (key -> true) that only collect.non_numeric = "zero" stores.
local function expected_points(cs_text, ds_text, delta, zero)
  local pts, n, nonnum = {}, 0, {}
  local function add(db, m, tags, t, raw)
    local v = numeric(raw)
    local k = point_key(db, m, tags, math.tointeger(t) + delta)
    if v == nil then
      nonnum[k] = true
      if not zero then return end
      v = 0.0
    end
    assert(pts[k] == nil, "duplicate expected point " .. k)
    pts[k] = v
    n = n + 1
  end
  for host, stats in pairs(cjson.decode(cs_text).caches) do
    for name, hist in pairs(stats) do
      if #hist > 0 then -- CacheStats: element [0] only
        local tags = { hostname = host, cdn = CDN }
        for k, v in pairs(SERVERS[host] or {}) do tags[k] = v end
        add("cache_stats", cs_measurement(name), tags, hist[1].time, hist[1].value)
      end
    end
  end
  for ds, keys in pairs(cjson.decode(ds_text).deliveryService) do
    for key, hist in pairs(keys) do
      local m, tags = ds_key(key)
      if m and #hist > 0 then
        tags.deliveryservice, tags.cdn = ds, CDN
        add("deliveryservice_stats", m, tags, hist[1].time, hist[1].value)
      end
    end
  end
  return pts, n, nonnum
end

-- One line protocol line (no escapes in these fixtures) -> measurement, tags, value, time.
local function parse_lp(line)
  assert(not line:find("\\", 1, true), "escape in " .. line)
  local series, field, ts = line:match("^(%S+) (%S+) (%-?%d+)$")
  assert(series, "not a line protocol line: " .. line)
  local m, tags = nil, {}
  for part in series:gmatch("[^,]+") do
    if not m then m = part else
      local k, v = part:match("^([^=]+)=(.*)$")
      tags[k] = v
    end
  end
  local v = field:match("^value=(.+)$")
  assert(v and tonumber(v), "float field value=: " .. line)
  return m, tags, tonumber(v) + 0.0, math.tointeger(tonumber(ts)), v
end

-- ATC's wire lines, timestamps shifted: { {db=, key=, value=, line=} }.
local function atc_lines(delta)
  local out = {}
  for _, path in ipairs(ATC_LP) do
    local db
    for line in stack.read_file(path):gmatch("[^\n]+") do
      if line:sub(1, 1) == "#" then
        db = line:match("db=([^&%s]+)")
      else
        local m, tags, v, t, vtext = parse_lp(line)
        local shifted = line:gsub("%d+$", tostring(t + delta))
        out[#out + 1] = { db = db, key = point_key(db, m, tags, t + delta), value = v, vtext = vtext, line = shifted }
      end
    end
  end
  assert(#out == 10, "ATC .lp fixtures have 10 lines")
  return out
end

local function write_config(to_url, name, extra)
  return stack.write_config(tmp .. "/config-" .. name .. ".lua", { to_url = to_url, influx_url = influx.url,
    config_interval = 300, state_dir = tmp .. "/state-" .. name,
    collect = "timeout = 2, connect_timeout = 1, " .. (extra or "") })
end

-- Everything in the "daily" RP of both databases: {key -> value}, count.
local function stored_points()
  local pts, n = {}, 0
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(influx.url, 'SELECT * FROM "daily"./.*/', db, { epoch = "ms" })
    assert(d and d.results and not d.results[1].error, "query failed: " .. cjson.encode(d or {}))
    for _, s in ipairs(d.results[1].series or {}) do
      for _, row in ipairs(s.values) do
        local tags, t, v = {}, nil, nil
        for i, col in ipairs(s.columns) do
          local x = row[i]
          if col == "time" then t = math.tointeger(x)
          elseif col == "value" then v = x
          elseif x ~= cjson.null and x ~= "" then tags[col] = x end
        end
        local k = point_key(db, s.name, tags, t)
        assert(pts[k] == nil, "duplicate stored point " .. k)
        pts[k] = v
        n = n + 1
      end
    end
    -- ATC writes floats only (value=3, never 3i): a field type conflict would follow otherwise.
    local fk = stack.influx_query(influx.url, 'SHOW FIELD KEYS FROM "daily"./.*/', db)
    for _, s in ipairs(fk.results[1].series or {}) do
      for _, row in ipairs(s.values) do
        assert.are.equal("float", row[2], db .. " " .. s.name .. "." .. row[1])
      end
    end
  end
  return pts, n
end

local function drop_all() stack.influx_drop_series(influx.url) end

local function same_points(want, got, what)
  for k, v in pairs(want) do
    assert.truthy(got[k] ~= nil, what .. ": missing " .. k)
    assert.are.equal(v, got[k], what .. ": value of " .. k)
  end
  for k in pairs(got) do
    assert.truthy(want[k] ~= nil, what .. ": unexpected " .. k)
  end
end

-- `poll --dry-run` output -> {key -> value}, count, set of raw lines.
local function dry_run(cfg)
  local rc, out, err = stack.run(tstats_bin .. " --config " .. sq(cfg) .. " poll --dry-run", { timeout = 60 })
  assert.are.equal(0, rc, err)
  local pts, n, lines, db = {}, 0, {}, nil
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "#" then
      db = line:match("db=([^&%s]+)")
    else
      assert(db, "line before any header: " .. line)
      local m, tags, v, t = parse_lp(line)
      local k = point_key(db, m, tags, t)
      assert(pts[k] == nil, "duplicate dry-run line " .. k)
      pts[k] = v
      n = n + 1
      lines[line] = true
    end
  end
  return pts, n, lines
end

-- The whole pipeline on one pair of fixture files; returns what was stored.
-- atc_n: how many of ATC's 10 lines this payload pair produces (the .lp files were
-- made from the wildcard DsStats; the unfiltered subset lacks total.tps_2xx/status_4xx).
local function collect_and_check(cs_path, ds_path, name, zero, atc_n)
  local sim = start_sim(cs_path, ds_path)
  local cs_text, ds_text = stack.read_file(cs_path), stack.read_file(ds_path)
  local want, nwant, nonnum = expected_points(cs_text, ds_text, sim.delta, zero)
  local cfg = write_config(sim.to_url, name, zero and 'non_numeric = "zero"' or nil)
  local rc, _, err = stack.run(tstats_bin .. " --config " .. sq(cfg) .. " once", { timeout = 60 })
  assert.are.equal(0, rc, err)
  assert.truthy(err:find("Sent %d+ stats for cache_stats"), err)
  local got, ngot = stored_points()
  assert.are.equal(nwant, ngot, "points stored")
  same_points(want, got, "stored")
  -- ATC's own lines, exactly (the 2.62200722e+10 counter as the integer 26220072200)
  local atc, big = {}, false
  for _, a in ipairs(atc_lines(sim.delta)) do
    if want[a.key] ~= nil then atc[#atc + 1] = a end
  end
  assert.are.equal(atc_n, #atc, "ATC lines this payload produces")
  for _, a in ipairs(atc) do
    assert.truthy(got[a.key] ~= nil, "ATC line not stored: " .. a.line)
    assert.are.equal(a.value, got[a.key], a.line)
    if a.vtext == "26220072200" then
      assert.are.equal("26220072200", string.format("%.17g", got[a.key]))
      big = true
    end
  end
  assert.truthy(big, "the 2.62200722e+10 counter is among the lines")
  local dpts, dn, dlines = dry_run(cfg)
  assert.are.equal(nwant, dn, "dry-run lines")
  same_points(want, dpts, "dry-run")
  for _, a in ipairs(atc) do
    assert.truthy(dlines[a.line], "dry-run prints ATC's line " .. a.line)
  end
  assert.are.equal(0, sim:stop(), "simulator exits cleanly (and leak-free under ASan)")
  return got, want, nonnum
end

-- A variant of a fixture with extra members spliced in after `anchor` (plain text).
local function splice(text, anchor, extra)
  local i, j = text:find(anchor, 1, true)
  assert(i, "anchor " .. anchor)
  return text:sub(1, j) .. extra .. text:sub(j + 1)
end

describe("tstats-sim fixture mode", function()
  setup(function() tmp = stack.tmpdir() end)
  teardown(function() stack.cleanup_all() end)

  it("serves the files byte-for-byte, times shifted by one delta, whatever the query", function()
    local t0 = os.time()
    local sim = start_sim(CS, DS_ALL)
    local d = sim.delta
    -- the newest "time" of both files (CacheStats 1589471331510) lands on a whole second near now
    local newest = 1589471331510 + d
    assert.are.equal(0, newest % 1000)
    assert.truthy(math.abs(newest // 1000 - t0) <= 5, "shifted to now")
    local cs_want, ds_want = shift_text(stack.read_file(CS), d), shift_text(stack.read_file(DS_ALL), d)
    assert.are_not.equal(stack.read_file(CS), cs_want)
    for _, mon in ipairs(sim.info.monitors) do
      assert.are.equal(cs_want, curl(sq(mon.url .. "/publish/CacheStats")))
      assert.are.equal(ds_want, curl(sq(mon.url .. "/publish/DsStats")))
    end
    local mon = sim.info.monitors[1].url
    -- TM's filters (and its 400 for unknown parameters) do not apply in fixture mode
    assert.are.equal(cs_want, curl(sq(mon .. "/publish/CacheStats?hc=1&wildcard=1&stats=bandwidth&bogus=1&type=mid")))
    assert.are.equal(ds_want, curl(sq(mon .. "/publish/DsStats?stats=kbps&deliveryservices=nope")))
    assert.are.equal(cs_want, curl(sq(mon .. "/publish/CacheStats/mid")))
    -- gzip carries the same body
    local hdr = stack.tmpdir() .. "/h"
    assert.are.equal(cs_want, curl("--compressed -D " .. sq(hdr) .. " " .. sq(mon .. "/publish/CacheStats")))
    assert.truthy(stack.read_file(hdr):lower():find("content-encoding: gzip", 1, true))
    -- body faults act on the fixture body; 503 as usual
    curl("-XPOST " .. sq(sim.to_url .. "/sim/fault?spec=truncate@" .. CDN .. ":0"))
    assert.are.equal(cs_want:sub(1, #cs_want // 2), curl(sq(mon .. "/publish/CacheStats")))
    curl("-XPOST " .. sq(sim.to_url .. "/sim/fault?spec=none@" .. CDN .. ":0"))
    curl("-XPOST " .. sq(sim.to_url .. "/sim/fault?spec=503@" .. CDN .. ":0"))
    assert.are.equal("503", curl("-o /dev/null -w '%{http_code}' " .. sq(mon .. "/publish/DsStats")))
    curl("-XPOST " .. sq(sim.to_url .. "/sim/fault?spec=none@" .. CDN .. ":0"))
    assert.are.equal(ds_want, curl(sq(mon .. "/publish/DsStats")))
    -- the same delta on /sim/stats
    local st = cjson.decode(curl(sq(sim.to_url .. "/sim/stats")))
    assert.are.equal(d, math.tointeger(st.fixture_time_delta_ms))
    assert.are.equal(CDN, st.fixture_cdn)
    assert.are.equal(2, st.fixture.caches)
    assert.are.equal(1, st.fixture.deliveryservices)
    -- TO: the fixture's caches with CiaB's cache groups and types, plus the monitors
    local jar = stack.tmpdir() .. "/jar"
    curl("-c " .. sq(jar) .. " -XPOST -d '{\"u\":\"admin\",\"p\":\"twelve12\"}' " .. sq(sim.to_url .. "/api/5.0/user/login"))
    local servers = cjson.decode(curl("-b " .. sq(jar) .. " " .. sq(sim.to_url .. "/api/5.0/servers"))).response
    local caches, rascal = {}, { ONLINE = 0, OFFLINE = 0 }
    for _, s in ipairs(servers) do
      assert.are.equal(CDN, s.cdn)
      if s.type == "RASCAL" then rascal[s.status] = rascal[s.status] + 1
      elseif s.type == "EDGE" or s.type == "MID" then caches[s.hostName] = s end
    end
    assert.are.same({ ONLINE = 2, OFFLINE = 1 }, rascal)
    for host, want in pairs(SERVERS) do
      assert.truthy(caches[host], host)
      assert.are.equal(want.cachegroup, caches[host].cacheGroup)
      assert.are.equal(want.type, caches[host].type)
      caches[host] = nil
    end
    assert.are.same({}, caches)
    -- CrStates names the fixture's delivery service
    local cr = cjson.decode(curl(sq(mon .. "/publish/CrStates")))
    assert.truthy(cr.deliveryServices.demo1)
    assert.are.equal(0, sim:stop())
  end)

  it("--fixture-cdn names the CDN; bad fixture options exit 2 with a reason", function()
    local sim = start_sim(CS, DS_WC, "--fixture-cdn other-cdn --monitors-per-cdn 1")
    assert.are.equal("other-cdn", sim.info.monitors[1].cdn)
    assert.are.equal(2, #sim.info.monitors)
    sim:stop()
    local bad = tmp .. "/bad.json"
    stack.write_file(bad, stack.read_file(CS):sub(1, 300))
    local notcs = tmp .. "/notcs.json"
    stack.write_file(notcs, '{"pp":"","date":"x"}')
    local cases = {
      { "--fixture-cachestats " .. sq(CS), "needs both" },
      { "--fixture-cdn x", "needs" },
      { "--fixture-cachestats " .. sq(CS) .. " --fixture-dsstats " .. sq(tmp .. "/missing.json"), "cannot open" },
      { "--fixture-cachestats " .. sq(bad) .. " --fixture-dsstats " .. sq(DS_WC), "invalid JSON" },
      { "--fixture-cachestats " .. sq(notcs) .. " --fixture-dsstats " .. sq(DS_WC), 'no top-level "caches"' },
      { "--fixture-cachestats " .. sq(CS) .. " --fixture-dsstats " .. sq(DS_WC) .. " --cdns 2", "one CDN" },
    }
    for _, c in ipairs(cases) do
      local rc, _, err = stack.run(sim_bin .. " " .. c[1], { timeout = 10 })
      assert.are.equal(2, rc, c[1])
      assert.truthy(err:find(c[2], 1, true), c[1] .. ": " .. err)
    end
  end)
end)

describe("tstats on the fixture payloads #asan", function()
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
  end)
  teardown(function() stack.cleanup_all() end)
  before_each(drop_all)

  it("stores exactly the numeric samples of CacheStats + unfiltered DsStats, ATC's lines among them", function()
    local got, want = collect_and_check(CS, DS_ALL, "all", false, 8)
    local _, n = expected_points(stack.read_file(CS), stack.read_file(DS_ALL), 0, false)
    assert.are.equal(14 + 15, n, "14 CacheStats samples, 15 DsStats keys under location./type./total.")
    assert.truthy(next(got) and next(want))
  end)

  it("stores exactly the numeric samples of CacheStats + wildcard DsStats", function()
    local _, n = expected_points(stack.read_file(CS), stack.read_file(DS_WC), 0, false)
    assert.are.equal(14 + 12, n)
    collect_and_check(CS, DS_WC, "wildcard", false, 10)
  end)

  it("skips non-numeric values by default and stores them as 0 with collect.non_numeric = zero", function()
    -- The synthesized payloads hold no non-numeric value tstats would map, so this
    -- variant adds TM's usual ones (times inside the files' range: same delta).
    local function e(v, t) return ('[{"value":%q,"time":%d,"span":1}]'):format(v, t) end
    local cs_text = splice(stack.read_file(CS), '"edge":{', '"status":' .. e("REPORTED", 1589471331498)
      .. ',"error-string":' .. e("<nil>", 1589471331498) .. ',"isHealthy":' .. e("true", 1589471331498)
      .. ',"system.inf.name":' .. e("eth0", 1589471331498) .. ',"queryTime":[],')
    cs_text = splice(cs_text, '"mid":{', '"isAvailable":' .. e("{true true false}", 1589471330899) .. ',')
    local ds_text = splice(stack.read_file(DS_WC), '"demo1":{',
      '"total.status_5xx":[{"time":1589471331000,"value":"<nil>"}],'
      .. '"type.EDGE.tps_3xx":[{"time":1589471331000,"value":"true"}],')
    local cs_path, ds_path = tmp .. "/cs_nonnum.json", tmp .. "/ds_nonnum.json"
    stack.write_file(cs_path, cs_text)
    stack.write_file(ds_path, ds_text)

    local got, _, nonnum = collect_and_check(cs_path, ds_path, "skip", false, 10)
    local nn = 0
    for k in pairs(nonnum) do
      nn = nn + 1
      assert.is_nil(got[k], "non-numeric stored: " .. k)
    end
    assert.are.equal(7, nn, "5 CacheStats + 2 DsStats non-numeric samples")
    assert.truthy(next(got))

    drop_all()
    got, _, nonnum = collect_and_check(cs_path, ds_path, "zero", true, 10) -- a new sim: a new delta
    local zeros = 0
    for k in pairs(nonnum) do
      assert.are.equal(0.0, got[k], "stored as 0: " .. k)
      zeros = zeros + 1
    end
    assert.are.equal(7, zeros)
  end)
end)
