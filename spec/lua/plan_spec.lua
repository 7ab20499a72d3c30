-- Specs for lua/plan.lua (pure Lua, no C core): TO servers + TRAFFIC_STATS
-- parameters → Traffic Monitor URLs per CDN, and the on-disk copy of the
-- last good TO data. Inputs are the TO fixtures (servers, CiaB profile).
local cjson = require "cjson"
local plan = require "plan"

local FIX = "spec/fixtures/"
local helpers = require "spec.lua.helpers"
local CDN = "CDN-in-a-Box"

local read = helpers.read

local deepcopy = helpers.deepcopy

-- The CiaB profile is in the loader's format; TO's API answers
-- /profiles/name/TRAFFIC_STATS/parameters with this shape instead.
local function api_params()
  local prof = cjson.decode(read("to/ciab_profile_TRAFFIC_STATS.json"))
  local out = {}
  for i, p in ipairs(prof.params) do
    out[i] = { configFile = p.configFile, id = 100 + i, lastUpdated = "2020-05-14T15:48:55Z",
               name = p.name, profiles = { prof.name }, secure = false, value = p.value }
  end
  return out, prof
end

local function values_of(params, name)
  local v = {}
  for _, p in ipairs(params) do if p.name == name then v[#v + 1] = p.value end end
  return v
end

-- Servers: the fixture's "mid" plus monitors/caches derived from it, so every
-- entry has the real v5 shape (nulls, interfaces, profiles, ...).
local function servers()
  local mid = cjson.decode(read("to/to_v5_servers_GET_response.json")).response[1]
  local function derive(fields)
    local s = deepcopy(mid)
    for k, v in pairs(fields) do s[k] = v end
    return s
  end
  return {
    mid,
    derive { hostName = "tm1", type = "RASCAL", status = "ONLINE", cacheGroup = "CDN_in_a_Box_Edge", tcpPort = 80 },
    derive { hostName = "edge", type = "EDGE", status = "REPORTED", cacheGroup = "CDN_in_a_Box_Edge" },
    derive { hostName = "tm0", type = "RASCAL", status = "ONLINE", tcpPort = cjson.null },
    derive { hostName = "tm-off", type = "RASCAL", status = "OFFLINE", tcpPort = 81 },
    derive { hostName = "tm-nocdn", type = "RASCAL", status = "ONLINE", cdn = "" },
    derive { hostName = "tm-other", type = "RASCAL", status = "ONLINE", cdn = "Other", domainName = "", tcpPort = 8080.0 },
    derive { hostName = "edge-other", type = "EDGE", status = "REPORTED", cdn = "Other", cacheGroup = "cg.with.dots" },
  }
end

local CFG = {
  traffic_ops = { status_to_monitor = "ONLINE" },
  databases = { cache = "cache_stats", ds = "deliveryservice_stats" },
  retention = { cache = "daily", ds = "daily" },
}

-- Go's url.ParseQuery: "+" is a space, %XX a byte. Only the first "stats=".
local function go_query(q)
  local out = {}
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local function dec(s) return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
    k, v = dec(k), dec(v)
    if out[k] == nil then out[k] = v end
  end
  return out
end

local function split_commas(s)
  local t = {}
  for item in (s .. ","):gmatch("([^,]*),") do t[#t + 1] = item end
  return t
end

local function find_ep(p, cdn, name)
  for _, e in ipairs(p.endpoints) do
    if e.cdn == cdn and e.name == name then return e end
  end
end

local function has_warning(p, needle)
  for _, w in ipairs(p.warnings) do
    if w:find(needle, 1, true) then return true end
  end
  return false
end

describe("plan.build", function()
  local params = api_params()

  it("finds the ONLINE Traffic Monitors per CDN, sorted by hostName", function()
    local p = plan.build(servers(), params, CFG)
    assert.are.same({ "http://tm0.infra.ciab.test", "http://tm1.infra.ciab.test:80" }, p.cdns[CDN].monitors)
    assert.are.same({ "http://tm-other:8080" }, p.cdns.Other.monitors)
    local n = 0
    for _ in pairs(p.cdns) do n = n + 1 end
    assert.are.equal(2, n)
    assert.is_true(has_warning(p, "tm-nocdn"))
    assert.is_true(has_warning(p, "tm0 has no valid tcpPort"))
  end)

  it("follows status_to_monitor (default ONLINE)", function()
    local p = plan.build(servers(), params, { traffic_ops = { status_to_monitor = "OFFLINE" } })
    assert.are.same({ [CDN] = { monitors = { "http://tm-off.infra.ciab.test:81" } } }, p.cdns)
    local d = plan.build(servers(), params, nil)
    assert.are.same({ "http://tm0.infra.ciab.test", "http://tm1.infra.ciab.test:80" }, d.cdns[CDN].monitors)
  end)

  it("builds CacheStats/DsStats URLs with the profile values in TO order, encoded as one value", function()
    local p = plan.build(servers(), params, CFG)
    for _, spec in ipairs({ { "CacheStats", "tm_cachestats", "mappings.cachestats", "cache_stats" },
                            { "DsStats", "tm_dsstats", "mappings.dsstats", "deliveryservice_stats" } }) do
      local name = spec[1]
      local e = find_ep(p, CDN, name)
      assert.is_table(e, name)
      assert.are.equal(spec[2], e.format)
      assert.are.equal(spec[3], e.mapping)
      assert.are.equal(spec[4], e.db)
      assert.are.equal("daily", e.rp)
      assert.are.equal("ms", e.precision)
      assert.are.equal(2, #e.urls)
      for i, url in ipairs(e.urls) do
        local base = p.cdns[CDN].monitors[i]
        local prefix = base .. "/publish/" .. name .. "?"
        assert.are.equal(prefix, url:sub(1, #prefix))
        local q = url:sub(#prefix + 1)
        -- nothing TM could misread: no raw "+", ",", space, "#"
        assert.is_nil(q:find("[+, #]"), q)
        local args = go_query(q)
        assert.are.equal("1", args.hc)
        assert.are.equal("1", args.wildcard)
        assert.are.same(values_of(params, name), split_commas(args.stats))
      end
    end
    local cs = find_ep(p, CDN, "CacheStats")
    assert.is_truthy(cs.urls[1]:find("frags_per_doc.3%2B", 1, true))
    assert.are.equal(37, #split_commas(go_query(cs.urls[1]:match("%?(.*)$")).stats))
    assert.are.equal(8, #split_commas(go_query(find_ep(p, CDN, "DsStats").urls[1]:match("%?(.*)$")).stats))
    assert.are.equal(0, #p.warnings - 2) -- only tm-nocdn and tm0's port
  end)

  it("lists endpoints per CDN in a stable order", function()
    local p = plan.build(servers(), params, CFG)
    local got = {}
    for _, e in ipairs(p.endpoints) do got[#got + 1] = e.cdn .. "/" .. e.name end
    assert.are.same({ CDN .. "/CacheStats", CDN .. "/DsStats", "Other/CacheStats", "Other/DsStats" }, got)
  end)

  it("omits stats= and warns when the profile has no values for a stat type", function()
    local only_cache = {}
    for _, x in ipairs(params) do if x.name == "CacheStats" then only_cache[#only_cache + 1] = x end end
    local p = plan.build(servers(), only_cache, CFG)
    local ds = find_ep(p, CDN, "DsStats")
    assert.are.equal("http://tm0.infra.ciab.test/publish/DsStats?hc=1&wildcard=1", ds.urls[1])
    assert.is_true(has_warning(p, "no DsStats parameters in profile TRAFFIC_STATS: requesting all stats"))
    assert.is_false(has_warning(p, "no CacheStats parameters"))
    assert.is_truthy(find_ep(p, CDN, "CacheStats").urls[1]:find("&stats=", 1, true))

    local none = plan.build(servers(), {}, CFG)
    assert.are.equal("http://tm0.infra.ciab.test/publish/CacheStats?hc=1&wildcard=1", find_ep(none, CDN, "CacheStats").urls[1])
    assert.is_true(has_warning(none, "no CacheStats parameters in profile TRAFFIC_STATS: requesting all stats"))
    assert.is_true(has_warning(none, "no DsStats parameters in profile TRAFFIC_STATS: requesting all stats"))
  end)

  it("ignores empty parameter values (with wildcard they would match everything)", function()
    local ps = { { name = "DsStats", value = "kbps" }, { name = "DsStats", value = "" },
                 { name = "DsStats", value = cjson.null }, { name = "DsStats", value = "a,b&c=d" } }
    local p = plan.build(servers(), ps, CFG)
    local q = go_query(find_ep(p, CDN, "DsStats").urls[1]:match("%?(.*)$"))
    assert.are.same({ "kbps", "a", "b&c=d" }, split_commas(q.stats))
    assert.is_nil(q.c)
    assert.is_true(has_warning(p, "empty DsStats parameter value"))
  end)

  it("keeps only the CDNs of the allow-list; empty list = all", function()
    local p = plan.build(servers(), params, { cdns = { "Other", "Nope" } })
    assert.is_nil(p.cdns[CDN])
    assert.are.same({ "http://tm-other:8080" }, p.cdns.Other.monitors)
    for _, e in ipairs(p.endpoints) do assert.are.equal("Other", e.cdn) end
    assert.is_true(has_warning(p, "cdn Nope"))
    -- the hostname map still covers every CDN (mappings look caches up in it)
    assert.is_table(p.servers.mid)
    local all = plan.build(servers(), params, { cdns = {} })
    assert.is_table(all.cdns[CDN])
    assert.is_table(all.cdns.Other)
  end)

  it("maps every hostName to its TO fields", function()
    local p = plan.build(servers(), params, CFG)
    assert.are.same({ hostName = "mid", domainName = "infra.ciab.test", cacheGroup = "CDN_in_a_Box_Mid",
                      type = "MID", cdn = CDN, status = "REPORTED" }, p.servers.mid)
    assert.are.same({ hostName = "edge-other", cacheGroup = "cg.with.dots", type = "EDGE", cdn = "Other",
                      status = "REPORTED", domainName = "infra.ciab.test" }, p.servers["edge-other"])
    assert.is_nil(p.servers["tm-other"].domainName) -- "" normalised away
    local n = 0
    for _ in pairs(p.servers) do n = n + 1 end
    assert.are.equal(8, n)
  end)

  it("adds operator endpoints for every CDN, validated once", function()
    local cfg = deepcopy(CFG)
    cfg.endpoints = {
      { name = "CrStates", path = "/publish/CrStates", query = { { "local", "true" } }, format = "lua",
        mapping = "mappings.crstates", db = "cache_stats", rp = "daily", precision = "s" },
      { name = "Sorted", path = "/api/x", query = { b = "x y", a = "1+1" }, mapping = "m", db = "d" },
      { name = "Raw", path = "/api/bandwidth-kbps", db = "d" },
      { name = "NoDb", path = "/x" },
      { name = "BadPath", path = "x?y", db = "d" },
      { name = "CrStates", path = "/again", db = "d" },
      { name = "BadQuery", path = "/q", query = 5, db = "d" },
      { path = "/anon", db = "d" },
      "not a table",
    }
    local p = plan.build(servers(), params, cfg)
    local cr = find_ep(p, CDN, "CrStates")
    assert.are.same({ "http://tm0.infra.ciab.test/publish/CrStates?local=true",
                      "http://tm1.infra.ciab.test:80/publish/CrStates?local=true" }, cr.urls)
    assert.are.equal("lua", cr.format)
    assert.are.equal("mappings.crstates", cr.mapping)
    assert.are.equal("s", cr.precision)
    assert.are.equal("daily", cr.rp)
    assert.are.same({ "http://tm-other:8080/publish/CrStates?local=true" }, find_ep(p, "Other", "CrStates").urls)
    assert.are.equal("http://tm-other:8080/api/x?a=1%2B1&b=x%20y", find_ep(p, "Other", "Sorted").urls[1])
    assert.are.equal("http://tm-other:8080/api/bandwidth-kbps", find_ep(p, "Other", "Raw").urls[1])
    assert.are.equal("ms", find_ep(p, "Other", "Raw").precision)
    for _, bad in ipairs({ "NoDb", "BadPath", "BadQuery" }) do
      assert.is_nil(find_ep(p, CDN, bad), bad)
    end
    assert.are.equal("/publish/CrStates", cr.urls[1]:match("^http://[^/]+(/[^?]*)"))
    assert.are.equal(10, #p.endpoints) -- (2 stock + 3 extra) x 2 CDNs
    for _, needle in ipairs({ "NoDb: db missing", "BadPath: path", "duplicate endpoint name CrStates",
                              "BadQuery: query", "endpoints[8]: name missing", "endpoints[9]: name missing" }) do
      assert.is_true(has_warning(p, needle), needle)
    end
  end)

  it("uses tstats.http.urlencode when the C core provides it", function()
    local saved = rawget(_G, "tstats")
    _G.tstats = { http = { urlencode = function(s) return "<" .. s .. ">" end } }
    local ok, p = pcall(plan.build, servers(), { { name = "DsStats", value = "kbps" } }, CFG)
    _G.tstats = saved
    assert.is_true(ok)
    assert.are.equal("http://tm0.infra.ciab.test/publish/DsStats?hc=1&wildcard=1&stats=<kbps>", find_ep(p, CDN, "DsStats").urls[1])
  end)

  it("encodes per RFC 3986 without the C core", function()
    assert.are.equal("a-b_c.d~e%2Bf%2Cg%20h%26%23%25%3D%2F%C3%BC", plan.local_urlencode("a-b_c.d~e+f,g h&#%=/ü"))
  end)

  it("survives hostile and broken TO data with warnings, never an error", function()
    local bad = servers()
    bad[#bad + 1] = { hostName = "evil/x@y", type = "RASCAL", status = "ONLINE", cdn = CDN, tcpPort = 80 }
    bad[#bad + 1] = { hostName = "evil2", domainName = "a b", type = "RASCAL", status = "ONLINE", cdn = CDN }
    bad[#bad + 1] = { hostName = "bigport", type = "RASCAL", status = "ONLINE", cdn = CDN, tcpPort = 70000 }
    bad[#bad + 1] = { hostName = "fracport", type = "RASCAL", status = "ONLINE", cdn = CDN, tcpPort = 80.5 }
    bad[#bad + 1] = { hostName = cjson.null, type = "RASCAL" }
    bad[#bad + 1] = "junk"
    bad[#bad + 1] = { hostName = "mid", cdn = "Other", type = "MID" } -- same host in another CDN
    local p = plan.build(bad, params, CFG)
    assert.are.same({ "http://bigport", "http://fracport", "http://tm0.infra.ciab.test", "http://tm1.infra.ciab.test:80" },
      p.cdns[CDN].monitors)
    assert.is_true(has_warning(p, "evil/x@y"))
    assert.is_true(has_warning(p, "evil2"))
    assert.is_true(has_warning(p, "bigport has no valid tcpPort"))
    assert.is_true(has_warning(p, "server #" .. (#bad - 2) .. " has no hostName"))
    assert.is_true(has_warning(p, "server #" .. (#bad - 1) .. " has no hostName"))
    assert.is_true(has_warning(p, "hostName mid appears in CDNs"))
    assert.are.equal("Other", p.servers.mid.cdn)

    for _, args in ipairs({ { nil, nil, nil }, { "x", 5, "cfg" }, { {}, {}, {} } }) do
      local ok, r = pcall(plan.build, args[1], args[2], args[3])
      assert.is_true(ok, tostring(r))
      assert.are.same({}, r.cdns)
      assert.are.same({}, r.endpoints)
    end
  end)
end)

describe("plan.save / plan.load", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
  end)
  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function exists(p)
    local f = io.open(p, "rb")
    if f then f:close() return true end
    return false
  end

  it("round-trips the TO data and gives the same plan back", function()
    local s, ps = servers(), api_params()
    local path = dir .. "/to_cache.json"
    assert.is_true(plan.save(path, { servers = s, params = ps, time = 1589471331510 }))
    assert.is_false(exists(path .. ".tmp"))
    local d = assert(plan.load(path))
    assert.are.equal(1589471331510, d.time)
    assert.are.equal(math.type(1), math.type(d.time))
    assert.are.equal("mid", d.servers[1].hostName)
    assert.are.equal(cjson.null, d.servers[1].guid)
    -- plan.build consumes the records (they become the host map's entries)
    assert.are.same(plan.build(s, ps, CFG), plan.build(d.servers, d.params, CFG))
  end)

  it("replaces an older file whole and ignores a stale temp file", function()
    local path = dir .. "/c.json"
    assert.is_true(plan.save(path, { servers = { { hostName = "old" } }, params = {}, time = 1 }))
    local f = assert(io.open(path .. ".tmp", "wb")) -- left by a crash mid-write
    f:write("{\"servers\":[{\"hostN")
    f:close()
    assert.are.equal("old", plan.load(path).servers[1].hostName)
    assert.is_true(plan.save(path, { servers = { { hostName = "new" } }, params = {}, time = 2 }))
    local d = plan.load(path)
    assert.are.equal("new", d.servers[1].hostName)
    assert.are.equal(2, d.time)
    assert.is_false(exists(path .. ".tmp"))
  end)

  it("leaves the old file intact when the new one cannot be written", function()
    local path = dir .. "/c.json"
    assert.is_true(plan.save(path, { servers = { { hostName = "keep" } }, params = {}, time = 1 }))
    -- a directory where the temp file should go makes the write fail
    assert(os.execute("mkdir '" .. path .. ".tmp'"))
    local ok, err = plan.save(path, { servers = { { hostName = "lost" } }, params = {}, time = 2 })
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("keep", plan.load(path).servers[1].hostName)
    -- values JSON cannot hold are refused before anything is written
    os.execute("rmdir '" .. path .. ".tmp'")
    ok, err = plan.save(path, { servers = { { x = 0 / 0 } }, params = {} })
    assert.is_nil(ok)
    assert.is_truthy(err:find("encode", 1, true))
    assert.are.equal("keep", plan.load(path).servers[1].hostName)
  end)

  it("stamps the time when none is given", function()
    local path = dir .. "/c.json"
    local before = os.time() * 1000
    assert.is_true(plan.save(path, { servers = {}, params = {} }))
    local t = plan.load(path).time
    assert.is_true(t >= before - 1000 and t <= os.time() * 1000 + 1000)
  end)

  it("reports missing, empty, corrupt and wrong-shape files", function()
    local cases = {
      { nil, "No such file" },
      { "", "empty" },
      { "{\"servers\":[{\"hostName\":\"a\"", "invalid JSON" },
      { "[1,2,3]", "servers/params missing" },
      { "{\"servers\":{},\"params\":\"x\"}", "servers/params missing" },
    }
    for i, c in ipairs(cases) do
      local path = dir .. "/f" .. i
      if c[1] then
        local f = assert(io.open(path, "wb")); f:write(c[1]); f:close()
      end
      local d, err = plan.load(path)
      assert.is_nil(d)
      assert.is_truthy(err:find(c[2], 1, true), err)
    end
    assert.is_nil((plan.save(nil, {})))
    assert.is_nil((plan.save(dir .. "/x", { servers = {} })))
    assert.is_nil((plan.load(nil)))
  end)
end)
