-- Specs for the stock mappings (lua/mappings/*.lua), pure Lua, no C core.
-- Every stat of the synthesized TM payloads is compared with (a) a literal
-- port of Traffic Stats' Go naming code and (b) the line protocol ATC itself
-- writes for these payloads (spec/fixtures/synthesized/influx_write_*.lp).
local cjson = require "cjson"
local plan = require "plan"
local cachestats = require "mappings.cachestats"
local dsstats = require "mappings.dsstats"

local FIX = "spec/fixtures/"
local helpers = require "spec.lua.helpers"
local CDN = "CDN-in-a-Box"

local read = helpers.read

local deepcopy = helpers.deepcopy

-- Line protocol reader for the fixtures (handles "\" escapes, unquoted tags).
local function split_unescaped(s, sep)
  local parts, cur, i = {}, {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "\\" and i < #s then
      cur[#cur + 1] = s:sub(i + 1, i + 1); i = i + 2
    elseif c == sep then
      parts[#parts + 1] = table.concat(cur); cur = {}; i = i + 1
    else
      cur[#cur + 1] = c; i = i + 1
    end
  end
  parts[#parts + 1] = table.concat(cur)
  return parts
end

local function parse_lp(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if not line:match("^#") and line:match("%S") then
      -- series, fields, time are separated by unescaped spaces
      local sp = {}
      local i = 1
      while i <= #line do
        local c = line:sub(i, i)
        if c == "\\" then i = i + 2
        else
          if c == " " then sp[#sp + 1] = i end
          i = i + 1
        end
      end
      assert(#sp == 2, "unexpected line protocol: " .. line)
      local series, fields, time = line:sub(1, sp[1] - 1), line:sub(sp[1] + 1, sp[2] - 1), line:sub(sp[2] + 1)
      local comps = split_unescaped(series, ",")
      local p = { measurement = comps[1], tags = {}, fields = {}, time = math.tointeger(tonumber(time)) }
      for k = 2, #comps do
        local key, val = comps[k]:match("^([^=]*)=(.*)$")
        p.tags[key] = val
      end
      for _, f in ipairs(split_unescaped(fields, ",")) do
        local key, val = f:match("^([^=]*)=(.*)$")
        p.fields[key] = tonumber(val)
      end
      out[#out + 1] = p
    end
  end
  return out
end

-- ---- Traffic Stats' naming code, ported statement by statement from Go ----
-- strings.Replace(s, old, new, n): n < 0 = all.
local function go_replace(s, old, new, n)
  local out, i, done = {}, 1, 0
  while true do
    if n >= 0 and done >= n then break end
    local found
    for j = i, #s - #old + 1 do
      if s:sub(j, j + #old - 1) == old then found = j; break end
    end
    if not found then break end
    out[#out + 1] = s:sub(i, found - 1) .. new
    i = found + #old
    done = done + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

local function go_contains(s, sub) return s:find(sub, 1, true) ~= nil end

local function go_split(s, sep)
  local parts, i = {}, 1
  while true do
    local j = s:find(sep, i, true)
    if not j then parts[#parts + 1] = s:sub(i); break end
    parts[#parts + 1] = s:sub(i, j - 1)
    i = j + #sep
  end
  return parts
end

-- calcCacheValues: measurement and tags (empty tags dropped by the client).
local function atc_cache(host, stat, servers, cdn)
  local m = go_replace(stat, ".bandwidth", ".kbps", 1)
  m = go_replace(m, "-", "_", -1)
  local srv = servers[host] or {}
  local tags = { cachegroup = srv.cacheGroup or "", hostname = host, cdn = cdn, type = srv.type or "" }
  for k, v in pairs(tags) do if v == "" then tags[k] = nil end end
  return m, tags
end

-- calcDsValues; returns "panic" where Go would index out of range.
local function atc_ds(ds, key, cdn)
  local s = go_split(key, ".") -- Lua s[1] is Go s[0]
  local tags = { deliveryservice = ds, cdn = cdn }
  local m
  if go_contains(key, "type.") then
    if #s < 3 then return "panic" end
    tags.cachegroup, tags.type, m = "all", s[2], s[3]
  elseif go_contains(key, "total.") then
    if #s < 2 then return "panic" end
    tags.cachegroup, m = s[1], s[2]
  else
    if #s < 3 then return "panic" end
    tags.cachegroup, m = s[2], s[3]
  end
  return m, tags
end

-- The servers map comes from TO data through plan.build: the fixture's "mid"
-- plus an "edge" derived from it (the .lp lines are for hostname=edge).
local function to_servers()
  local doc = cjson.decode(read("to/to_v5_servers_GET_response.json"))
  local mid = doc.response[1]
  local edge = deepcopy(mid)
  edge.hostName, edge.cacheGroup, edge.type, edge.id = "edge", "CDN_in_a_Box_Edge", "EDGE", 13
  return plan.build({ mid, edge }, {}, nil).servers
end

local function merged(ent, st)
  local t = {}
  for k, v in pairs(ent or {}) do t[k] = v end
  for k, v in pairs(st and st.tags or {}) do t[k] = v end
  return t
end

describe("mappings.cachestats", function()
  local servers = to_servers()
  local ctx = { cdn = CDN, endpoint = "CacheStats", servers = servers, config = {} }
  local payload = cjson.decode(read("synthesized/tm_CacheStats_legacy_hc1_wildcard.json"))

  it("names every stat of the TM payload exactly as Traffic Stats does", function()
    local n = 0
    for host, stats in pairs(payload.caches) do
      local ent = cachestats.entity(host, ctx)
      assert.is_table(ent)
      for stat in pairs(stats) do
        local m = cachestats.stat(stat, ctx)
        assert.is_table(m, stat)
        local em, etags = atc_cache(host, stat, servers, CDN)
        assert.are.equal(em, m.measurement, stat)
        assert.are.same(etags, merged(ent, m), stat)
        assert.are.equal("value", m.field)
        assert.is_false(m.as_int)
        assert.is_nil(m.sample)
        n = n + 1
      end
    end
    -- edge 8 stats + mid 6 in the fixture: make sure both hosts were walked
    assert.are.equal(14, n)
  end)

  it("produces every line ATC wrote for this payload", function()
    local lines = parse_lp(read("synthesized/influx_write_cache_stats.lp"))
    assert.is_true(#lines >= 5)
    for _, lp in ipairs(lines) do
      local found = 0
      for host, stats in pairs(payload.caches) do
        for stat, hist in pairs(stats) do
          local m = cachestats.stat(stat, ctx)
          if m.measurement == lp.measurement and hist[1].time == lp.time and host == lp.tags.hostname then
            found = found + 1
            assert.are.same(lp.tags, merged(cachestats.entity(host, ctx), m))
            assert.are.equal(lp.fields.value, tonumber(hist[1].value))
          end
        end
      end
      assert.are.equal(1, found, "no unique sample for " .. lp.measurement)
    end
  end)

  it("replaces the first .bandwidth only and every dash", function()
    local cases = {
      ["bandwidth"] = "bandwidth",
      ["a.bandwidth"] = "a.kbps",
      ["a.bandwidth.b.bandwidth"] = "a.kbps.b.bandwidth",
      ["ats.plugin.remap_stats.x.bandwidth-in.total"] = "ats.plugin.remap_stats.x.kbps_in.total",
      ["foo.bandwidthx"] = "foo.kbpsx",               -- substring, as Go does
      ["a_bandwidth"] = "a_bandwidth",               -- "." is literal, not a pattern
      ["aXbandwidth"] = "aXbandwidth",
      ["availableBandwidthInKbps"] = "availableBandwidthInKbps",
      ["error-string"] = "error_string",
      ["ats.proxy.process.ssl.cipher.user_agent.ECDHE-RSA-AES128-GCM-SHA256"] =
        "ats.proxy.process.ssl.cipher.user_agent.ECDHE_RSA_AES128_GCM_SHA256",
      ["-.bandwidth-"] = "_.kbps_",
      ["50%.bandwidth%d"] = "50%.kbps%d",
      ["..bandwidth"] = "..kbps",
    }
    for stat, want in pairs(cases) do
      assert.are.equal(want, cachestats.stat(stat, ctx).measurement, stat)
      assert.are.equal((atc_cache("h", stat, {}, CDN)), want, "oracle disagrees on " .. stat)
    end
  end)

  it("tags an unknown host with hostname and cdn only", function()
    assert.are.same({ hostname = "ghost", cdn = CDN }, cachestats.entity("ghost", ctx))
    assert.are.same({ hostname = "ghost" }, cachestats.entity("ghost", { servers = servers }))
    assert.are.same({ hostname = "ghost" }, cachestats.entity("ghost", {}))
  end)

  it("ignores null / empty TO fields instead of writing them", function()
    local s = { odd = { cacheGroup = cjson.null, type = "", hostName = "odd" } }
    assert.are.same({ hostname = "odd", cdn = CDN }, cachestats.entity("odd", { cdn = CDN, servers = s }))
  end)

  it("passes hostile names through unchanged (escaping is the C core's job)", function()
    local names = { "edge 1", "a,b", "k=v", 'q"uote', "ünï©ødé", "tab\there", "back\\slash", "#hash" }
    local s = {}
    for _, n in ipairs(names) do s[n] = { cacheGroup = n .. "-cg", type = n } end
    for _, n in ipairs(names) do
      assert.are.same({ hostname = n, cdn = CDN, cachegroup = n .. "-cg", type = n },
        cachestats.entity(n, { cdn = CDN, servers = s }))
      local m = cachestats.stat("x." .. n, ctx)
      assert.are.equal(("x." .. n):gsub("-", "_"), m.measurement)
    end
  end)

  it("drops empty and non-string names", function()
    assert.is_nil(cachestats.entity("", ctx))
    assert.is_nil(cachestats.stat("", ctx))
    assert.is_nil(cachestats.stat(nil, ctx))
  end)
end)

describe("mappings.dsstats", function()
  local ctx = { cdn = CDN, endpoint = "DsStats", servers = {}, config = {} }
  local unfiltered = cjson.decode(read("synthesized/tm_DsStats_unfiltered_one_ds.json"))
  local wildcard = cjson.decode(read("synthesized/tm_DsStats_wildcard.json"))

  it("maps every key of the unfiltered payload like ATC, minus ATC's crashes and quirks", function()
    local mapped, unprefixed, quirk, total = 0, 0, 0, 0
    for ds, keys in pairs(unfiltered.deliveryService) do
      local ent = dsstats.entity(ds, ctx)
      assert.are.same({ deliveryservice = ds, cdn = CDN }, ent)
      for key in pairs(keys) do
        total = total + 1
        local m = dsstats.stat(key, ctx)
        local last = key:match("([^.]*)$")
        if not key:find(".", 1, true) then
          -- ATC indexes s[1] of a one-element split: a panic
          assert.are.equal("panic", (atc_ds(ds, key, CDN)), key)
          assert.is_nil(m, key)
          unprefixed = unprefixed + 1
        elseif last == "isAvailable" or last == "error-string" then
          assert.is_truthy(key:match("^location%.location%.") or key:match("^location%.type%.")
            or key:match("^location%.total%."), key)
          assert.is_nil(m, key)
          quirk = quirk + 1
        else
          local em, etags = atc_ds(ds, key, CDN)
          assert.is_table(m, key)
          assert.are.equal(em, m.measurement, key)
          assert.are.same(etags, merged(ent, m), key)
          assert.are.equal("value", m.field)
          mapped = mapped + 1
        end
      end
    end
    assert.are.equal(total, mapped + unprefixed + quirk)
    assert.is_true(mapped > 0 and unprefixed > 0 and quirk > 0)
  end)

  it("maps every key of the filtered (wildcard) payload like ATC", function()
    local n = 0
    for ds, keys in pairs(wildcard.deliveryService) do
      local ent = dsstats.entity(ds, ctx)
      for key in pairs(keys) do
        local m = dsstats.stat(key, ctx)
        local em, etags = atc_ds(ds, key, CDN)
        assert.are.equal(em, m.measurement, key)
        assert.are.same(etags, merged(ent, m), key)
        n = n + 1
      end
    end
    assert.are.equal(12, n)
  end)

  it("produces every line ATC wrote for these payloads", function()
    local lines = parse_lp(read("synthesized/influx_write_deliveryservice_stats.lp"))
    assert.is_true(#lines >= 5)
    for _, lp in ipairs(lines) do
      local found = {}
      for _, payload in ipairs({ unfiltered, wildcard }) do
        for ds, keys in pairs(payload.deliveryService) do
          for key, hist in pairs(keys) do
            local m = dsstats.stat(key, ctx)
            if m and m.measurement == lp.measurement and hist[1].time == lp.time then
              local tags = merged(dsstats.entity(ds, ctx), m)
              if tags.cachegroup == lp.tags.cachegroup and tags.type == lp.tags.type then
                assert.are.same(lp.tags, tags)
                assert.are.equal(lp.fields.value, tonumber(hist[1].value))
                found[key] = true
              end
            end
          end
        end
      end
      assert.is_not_nil(next(found), "no sample for " .. lp.measurement .. " " .. tostring(lp.tags.cachegroup))
    end
  end)

  it("parses dotted cache groups from the right", function()
    local cases = {
      ["location.us.east-1.kbps"] = { "kbps", { cachegroup = "us.east-1" } },
      ["location.a.b.c.d.tps_2xx"] = { "tps_2xx", { cachegroup = "a.b.c.d" } },
      ["location.location.foo.kbps"] = { "kbps", { cachegroup = "location.foo" } },
      ["location.type.x.kbps"] = { "kbps", { cachegroup = "type.x" } },
      ["location.prototype.x.kbps"] = { "kbps", { cachegroup = "prototype.x" } },
      ["location.x.total.y.kbps"] = { "kbps", { cachegroup = "x.total.y" } },
      ["location.total.x.kbps"] = { "kbps", { cachegroup = "total.x" } },
      ["location.all.kbps"] = { "kbps", { cachegroup = "all" } },
      ["location.type.kbps"] = { "kbps", { cachegroup = "type" } },
      ["location.location.kbps"] = { "kbps", { cachegroup = "location" } },
      ["location.cg.weird-stat"] = { "weird-stat", { cachegroup = "cg" } }, -- raw, no "_"
      ["type.EDGE.tps_2xx"] = { "tps_2xx", { cachegroup = "all", type = "EDGE" } },
      ["type.MID.kbps"] = { "kbps", { cachegroup = "all", type = "MID" } },
      ["type.ODD.TYPE.kbps"] = { "kbps", { cachegroup = "all", type = "ODD.TYPE" } },
      ["total.kbps"] = { "kbps", { cachegroup = "total" } },
      ["total.tps_total"] = { "tps_total", { cachegroup = "total" } },
    }
    for key, want in pairs(cases) do
      local m = dsstats.stat(key, ctx)
      assert.is_table(m, key)
      assert.are.equal(want[1], m.measurement, key)
      assert.are.same(want[2], m.tags, key)
    end
    -- the oracle documents what ATC does wrong with the first one
    local atcm, atctags = atc_ds("d", "location.us.east-1.kbps", CDN)
    assert.are.equal("east-1", atcm)
    assert.are.equal("us", atctags.cachegroup)
  end)

  it("drops the quirk keys, unprefixed keys and malformed keys", function()
    local drop = {
      "location.location.CDN_in_a_Box_Edge.isAvailable", "location.location.us.east.error-string",
      "location.type.EDGE.isAvailable", "location.type.EDGE.error-string",
      "location.total.isAvailable", "location.total.error-string",
      "caches-configured", "caches-reporting", "caches-available", "status", "isHealthy",
      "isAvailable", "error-string", "disabledLocations",
      "", ".", "location.", "location..kbps", "type..kbps", "total.", "total..kbps",
      "foo.kbps", "kbps.", "type.EDGE.", "locationx.cg.kbps",
    }
    for _, key in ipairs(drop) do
      assert.is_nil(dsstats.stat(key, ctx), key)
    end
    assert.is_nil(dsstats.stat(nil, ctx))
  end)

  describe("a cache group literally named total", function()
    local saved
    before_each(function() saved = rawget(_G, "tstats") end)
    after_each(function() _G.tstats = saved end)

    it("is dropped, warned and counted: it would overwrite the DS totals", function()
      local counted, warned = {}, {}
      _G.tstats = {
        count = function(name, n) counted[name] = (counted[name] or 0) + (n or 1) end,
        warn = function(msg) warned[#warned + 1] = msg end,
      }
      assert.is_nil(dsstats.stat("location.total.kbps", ctx))
      assert.are.equal(1, counted.mapping_dsstats_cachegroup_total)
      assert.is_truthy(warned[1]:find("location.total.kbps", 1, true))
      -- the real totals are untouched
      assert.are.same({ cachegroup = "total" }, dsstats.stat("total.kbps", ctx).tags)
    end)

    it("does not need the C core to be dropped", function()
      _G.tstats = nil
      assert.is_nil(dsstats.stat("location.total.tps_2xx", ctx))
    end)
  end)

  it("passes hostile names through unchanged", function()
    local names = { "cg 1", "a,b", "k=v", 'q"uote', "ünï©ødé", "x\\y" }
    for _, n in ipairs(names) do
      assert.are.same({ cachegroup = n }, dsstats.stat("location." .. n .. ".kbps", ctx).tags)
      assert.are.same({ cachegroup = "all", type = n }, dsstats.stat("type." .. n .. ".kbps", ctx).tags)
      assert.are.same({ deliveryservice = n, cdn = CDN }, dsstats.entity(n, ctx))
    end
  end)

  it("builds entity tags without a cdn when the context has none, drops empty names", function()
    assert.are.same({ deliveryservice = "demo1" }, dsstats.entity("demo1", {}))
    assert.are.same({ deliveryservice = "demo1" }, dsstats.entity("demo1", nil))
    assert.is_nil(dsstats.entity("", ctx))
    assert.is_nil(dsstats.entity(nil, ctx))
  end)
end)
