-- Polling plan (Lua side, pure Lua): turns Traffic Ops data (servers and the
-- TRAFFIC_STATS profile parameters) into the list of Traffic Monitor URLs the
-- C core polls per CDN, plus the hostName map the mappings read; keeps the
-- last good TO data on disk so a restart during a TO outage still collects.
local plan = {}

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- RFC 3986 percent-encoding: tstats.http.urlencode, or the pure-Lua twin
-- when the C core is absent (specs); both live in lua/to.lua.
local urlencode = require("to").urlencode
plan.local_urlencode = require("to").local_urlencode

-- Host names and domains go into URLs unencoded: only DNS-ish characters are
-- accepted, so a hostile TO entry cannot smuggle a path, userinfo or query.
local function dns_ok(s)
  return s:match("^[%w%.%-_]+$") ~= nil
end

local function port_of(v)
  local n = tonumber(v)
  if n == nil then return nil end
  n = math.tointeger(n)
  if n == nil or n <= 0 or n > 65535 then return nil end
  return n
end

-- Query string of an extra endpoint: a ready string, an array of {k, v}
-- pairs (order kept) or a map (keys sorted for a stable URL).
local function build_query(q)
  if q == nil then return "" end
  if type(q) == "string" then return q end
  if type(q) ~= "table" then return nil end
  local out = {}
  if #q > 0 then
    for _, kv in ipairs(q) do
      if type(kv) ~= "table" or kv[1] == nil then return nil end
      out[#out + 1] = urlencode(kv[1]) .. "=" .. urlencode(kv[2] == nil and "" or tostring(kv[2]))
    end
  else
    local keys = {}
    for k in pairs(q) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      out[#out + 1] = urlencode(k) .. "=" .. urlencode(tostring(q[k]))
    end
  end
  return table.concat(out, "&")
end

-- stats= value for one parameter name: every value in TO order, joined with
-- "," and encoded as ONE value (TM, Go url.Query, decodes %2C back to ","
-- before splitting). nil when the profile has none.
local function stats_query(params, pname, warnings, profile)
  local vals = {}
  for _, p in ipairs(params or {}) do
    if type(p) == "table" and p.name == pname then
      if type(p.value) == "string" and p.value ~= "" then
        vals[#vals + 1] = p.value
      else
        -- With wildcard=1 an empty entry is a substring of every stat name:
        -- it would silently turn the filter off.
        warnings[#warnings + 1] = string.format("empty %s parameter value in profile %s ignored", pname, profile)
      end
    end
  end
  if #vals == 0 then return nil end
  return urlencode(table.concat(vals, ","))
end

local function defaults(cfg)
  cfg = type(cfg) == "table" and cfg or {}
  local tocfg = type(cfg.traffic_ops) == "table" and cfg.traffic_ops or {}
  local dbs = type(cfg.databases) == "table" and cfg.databases or {}
  local rps = type(cfg.retention) == "table" and cfg.retention or {}
  return {
    status = str(tocfg.status_to_monitor) or "ONLINE",
    profile = str(tocfg.profile) or "TRAFFIC_STATS",
    cache_db = str(dbs.cache) or "cache_stats",
    ds_db = str(dbs.ds) or "deliveryservice_stats",
    cache_rp = str(rps.cache),
    ds_rp = str(rps.ds),
    cdns = type(cfg.cdns) == "table" and cfg.cdns or nil,
    endpoints = type(cfg.endpoints) == "table" and cfg.endpoints or {},
  }
end

-- What the host map keeps of a server (ctx.servers of the mappings).
local HOST_KEYS = { hostName = true, domainName = true, cacheGroup = true, type = true, cdn = true, status = true }

-- servers: TO GET /servers "response" (its records become the host map's
-- entries: do not reuse the list); params: TO profile parameters
-- "response"; cfg: tstats.config (or nil). Never raises on bad TO data:
-- what cannot be used is skipped and explained in `warnings`.
function plan.build(servers, params, cfg)
  local c = defaults(cfg)
  local warnings = {}
  local function warn(fmt, ...) warnings[#warnings + 1] = string.format(fmt, ...) end

  if type(servers) ~= "table" then warn("servers: not a list"); servers = {} end
  if type(params) ~= "table" then warn("parameters: not a list"); params = {} end

  local allow
  if c.cdns and #c.cdns > 0 then
    allow = {}
    for _, n in ipairs(c.cdns) do allow[tostring(n)] = true end
  end

  local map, by_cdn = {}, {}
  for i, s in ipairs(servers) do
    local host = type(s) == "table" and str(s.hostName)
    if not host then
      warn("server #%d has no hostName: skipped", i)
    else
      local port = s.tcpPort
      -- The record becomes the host map's entry in place (the list is the
      -- caller's, used once): a second table per server would leave the
      -- first ones' memory pinned by the shared host name strings, ~15 MB
      -- of RSS at 32,000 servers that malloc cannot give back.
      for k in pairs(s) do
        if not HOST_KEYS[k] then s[k] = nil end
      end
      local e = s
      e.hostName, e.domainName, e.cacheGroup = host, str(s.domainName), str(s.cacheGroup)
      e.type, e.cdn, e.status = str(s.type), str(s.cdn), str(s.status)
      -- ATC keeps the last one too (a map keyed by hostName over all CDNs).
      -- Monitors are never tag sources, so only caches are worth a warning.
      if map[host] and map[host].cdn ~= e.cdn and e.type ~= "RASCAL" and map[host].type ~= "RASCAL" then
        warn("hostName %s appears in CDNs %s and %s: tags use the last one", host,
             tostring(map[host].cdn), tostring(e.cdn))
      end
      map[host] = e
      if e.type == "RASCAL" and e.status == c.status then
        port = port_of(port)
        if not e.cdn then
          warn("Traffic Monitor %s has no cdn: skipped", host)
        elseif allow and not allow[e.cdn] then -- luacheck: ignore 542
          -- not a CDN this instance collects
        elseif not dns_ok(host) or (e.domainName and not dns_ok(e.domainName)) then
          warn("Traffic Monitor %s: hostName/domainName not usable in a URL: skipped", host)
        else
          if not port then
            warn("Traffic Monitor %s has no valid tcpPort (%s): using the scheme's default port", host, tostring(s.tcpPort))
          end
          local base = "http://" .. host .. (e.domainName and "." .. e.domainName or "") .. (port and ":" .. port or "")
          by_cdn[e.cdn] = by_cdn[e.cdn] or {}
          table.insert(by_cdn[e.cdn], { host = host, base = base })
        end
      end
    end
  end

  local cdn_names = {}
  for n, mons in pairs(by_cdn) do
    -- ATC's order is Go map order (random); sorted is reproducible.
    table.sort(mons, function(a, b) return a.host < b.host end)
    cdn_names[#cdn_names + 1] = n
  end
  table.sort(cdn_names)
  if allow then
    for _, n in ipairs(c.cdns) do
      if not by_cdn[tostring(n)] then warn("no Traffic Monitor with status %s in cdn %s", c.status, tostring(n)) end
    end
  end

  local stock = {
    { name = "CacheStats", format = "tm_cachestats", mapping = "mappings.cachestats", db = c.cache_db, rp = c.cache_rp },
    { name = "DsStats", format = "tm_dsstats", mapping = "mappings.dsstats", db = c.ds_db, rp = c.ds_rp },
  }
  for _, st in ipairs(stock) do
    local q = "hc=1&wildcard=1"
    local stats = stats_query(params, st.name, warnings, c.profile)
    if stats then
      q = q .. "&stats=" .. stats
    else
      -- An empty "stats=" is a host/DS *name filter* on TM (zero results).
      warn("no %s parameters in profile %s: requesting all stats", st.name, c.profile)
    end
    st.path = "/publish/" .. st.name
    st.query = q
    st.precision = "ms"
  end

  -- Operator endpoints from the config, validated once here, not per CDN.
  local extras, seen = {}, { CacheStats = true, DsStats = true }
  for i, ep in ipairs(c.endpoints) do
    local name = type(ep) == "table" and str(ep.name)
    local q = type(ep) == "table" and build_query(ep.query)
    if not name then
      warn("endpoints[%d]: name missing: skipped", i)
    elseif seen[name] then
      warn("endpoints[%d]: duplicate endpoint name %s: skipped", i, name)
    elseif type(ep.path) ~= "string" or not ep.path:match("^/[^?#%s]*$") then
      warn("endpoints[%d] %s: path must start with / and hold no query: skipped", i, name)
    elseif not q then
      warn("endpoints[%d] %s: query must be a string, a map or a list of {k, v}: skipped", i, name)
    elseif not str(ep.db) then
      warn("endpoints[%d] %s: db missing: skipped", i, name)
    else
      seen[name] = true
      extras[#extras + 1] = {
        name = name, path = ep.path, query = q, format = str(ep.format) or "lua",
        mapping = str(ep.mapping), db = ep.db, rp = str(ep.rp), precision = str(ep.precision) or "ms",
      }
    end
  end

  local out = { cdns = {}, servers = map, endpoints = {}, warnings = warnings }
  for _, cdn in ipairs(cdn_names) do
    local mons = by_cdn[cdn]
    local monitors = {}
    for _, m in ipairs(mons) do monitors[#monitors + 1] = m.base end
    out.cdns[cdn] = { monitors = monitors }
    local function add(st)
      local urls = {}
      for _, base in ipairs(monitors) do
        urls[#urls + 1] = base .. st.path .. (st.query ~= "" and "?" .. st.query or "")
      end
      out.endpoints[#out.endpoints + 1] = {
        cdn = cdn, name = st.name, format = st.format, urls = urls, db = st.db, rp = st.rp,
        precision = st.precision, mapping = st.mapping,
      }
    end
    for _, st in ipairs(stock) do add(st) end
    for _, st in ipairs(extras) do add(st) end
  end
  return out
end

local function json()
  local ts = rawget(_G, "tstats")
  if type(ts) == "table" and type(ts.json) == "table" then return ts.json end
  return require "cjson"
end

-- Keeps the last good TO answer: { servers = <TO servers>, params = <TO
-- parameters>, time = <ms> }. Written to a temp file then renamed over the
-- old one, so a crash leaves either the old or the new file, never half.
function plan.save(path, data)
  if type(path) ~= "string" or path == "" then return nil, "plan.save: path expected" end
  if type(data) ~= "table" or type(data.servers) ~= "table" or type(data.params) ~= "table" then
    return nil, "plan.save: {servers=, params=} expected"
  end
  if type(io) ~= "table" or type(os) ~= "table" or not os.rename then
    return nil, "plan.save: no io/os library in this Lua state"
  end
  local t = data.time
  if math.type(t) ~= "integer" then
    local ts = rawget(_G, "tstats")
    t = (type(ts) == "table" and type(ts.now_ms) == "function") and ts.now_ms() or os.time() * 1000
  end
  local ok, text = pcall(json().encode, { version = 1, time = t, servers = data.servers, params = data.params })
  if not ok then return nil, "plan.save: cannot encode: " .. tostring(text) end
  local ts = rawget(_G, "tstats")
  if type(ts) == "table" and ts._write_durable then
    -- fsync before and after the rename: a power loss leaves the old or the new file
    local dok, derr = ts._write_durable(path, text .. "\n")
    if not dok then return nil, "plan.save: " .. tostring(derr) end
    return true
  end
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "plan.save: " .. tostring(err) end
  local wok, werr = f:write(text, "\n")
  local cok, cerr = f:close()
  if not wok or not cok then
    os.remove(tmp)
    return nil, "plan.save: write " .. tmp .. ": " .. tostring(werr or cerr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, "plan.save: rename to " .. path .. ": " .. tostring(rerr)
  end
  return true
end

-- Returns { servers=, params=, time= } or nil, err (missing, unreadable or
-- corrupt file: the caller then has nothing to fall back on and says so).
function plan.load(path)
  if type(path) ~= "string" or path == "" then return nil, "plan.load: path expected" end
  local f, err = io.open(path, "rb")
  if not f then return nil, "plan.load: " .. tostring(err) end
  local text = f:read("a")
  f:close()
  if not text or text == "" then return nil, "plan.load: " .. path .. " is empty" end
  local ok, doc = pcall(json().decode, text)
  if not ok then return nil, "plan.load: " .. path .. ": invalid JSON: " .. tostring(doc) end
  if type(doc) ~= "table" or type(doc.servers) ~= "table" or type(doc.params) ~= "table" then
    return nil, "plan.load: " .. path .. ": servers/params missing"
  end
  return { servers = doc.servers, params = doc.params, time = math.tointeger(doc.time) }
end

return plan
