-- Checks of a resolved configuration beyond types (Lua side): what would only
-- fail at run time (URL schemes, summary sinks and rollups, the pg sink's
-- conninfo, extra endpoint entries and all their fields). lua/options.lua runs
-- them on every load, so `tstats check`, `run` and `once` refuse the same things.
local V = {}

V.sinks = { pg = true, api = true }
V.formats = { tm_cachestats = true, tm_dsstats = true, lua = true }
V.precisions = { ms = true, s = true, m = true, h = true }
V.endpoint_fields = { "name", "path", "query", "format", "mapping", "db", "rp", "precision" }

-- Does module NAME exist (script_dir or embedded), without running it? The
-- configuration being checked may name a script_dir not in force yet.
function V.module_exists(name, script_dir)
  if package.loaded[name] then return true end
  if type(script_dir) == "string" and script_dir ~= "" then
    local f = io.open(script_dir .. "/" .. name:gsub("%.", "/") .. ".lua", "r")
    if f then f:close(); return true end
  end
  for _, s in ipairs(package.searchers) do
    local ok, loader = pcall(s, name)
    if ok and type(loader) == "function" then return true end
  end
  return false
end

-- nil when s is an http(s) URL with a host, else why not.
function V.url_problem(s)
  if type(s) ~= "string" then return "must be a string" end
  local scheme, host = s:match("^(%a[%w+.-]*)://([^/?#]*)")
  if not scheme then return ("'%s' is not a URL: it needs http:// or https://"):format(s) end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return ("'%s': scheme must be http or https"):format(s) end
  host = host:gsub("^.*@", "")
  if host == "" or host:match("^:") then return ("'%s' has no host"):format(s) end
  local port = host:match(":(%d*)$")
  if port and (port == "" or tonumber(port) < 1 or tonumber(port) > 65535) then
    return ("'%s' has an invalid port"):format(s)
  end
end

-- Edit distance with transpositions (a typo swaps two letters as often as it drops one).
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end
V.distance = distance

local function suggest(word, list)
  local best, bestd
  for _, k in ipairs(list) do
    local d = distance(word, k)
    if not bestd or d < bestd then best, bestd = k, d end
  end
  if bestd and bestd <= math.max(2, #word // 3) then return best end
end

-- Problems of one extra endpoint entry: list of {key, message}.
function V.endpoint(ep, i, seen, script_dir)
  local out = {}
  local key = ("endpoints[%d]"):format(i)
  local function bad(field, msg) out[#out + 1] = { key .. (field and ("." .. field) or ""), msg } end
  if type(ep) ~= "table" then bad(nil, "must be a table { name =, path =, db =, mapping =, ... }"); return out end
  local known = {}
  for _, f in ipairs(V.endpoint_fields) do known[f] = true end
  for k in pairs(ep) do
    if not known[k] then
      local s = type(k) == "string" and suggest(k, V.endpoint_fields)
      bad(tostring(k), "is not a known endpoint field" .. (s and (" (did you mean '" .. s .. "'?)") or "")
        .. "; fields: " .. table.concat(V.endpoint_fields, ", "))
    end
  end
  if type(ep.name) ~= "string" or ep.name == "" then
    bad("name", "is required (a string)")
  elseif seen[ep.name] then
    bad("name", ("'%s' is already used by %s"):format(ep.name, seen[ep.name]))
  else
    seen[ep.name] = key
  end
  if type(ep.path) ~= "string" or not ep.path:match("^/[^?#%s]*$") then
    bad("path", "must be a string starting with / without a query (use query =)")
  end
  local q = ep.query
  if q ~= nil and type(q) ~= "string" and type(q) ~= "table" then
    bad("query", "must be a string, a map or a list of {k, v}")
  elseif type(q) == "table" and #q > 0 then
    for j, kv in ipairs(q) do
      if type(kv) ~= "table" or kv[1] == nil then bad("query", ("item %d must be {key, value}"):format(j)) break end
    end
  end
  if ep.format ~= nil and not V.formats[ep.format] then
    bad("format", ("'%s' is not a format: tm_cachestats, tm_dsstats or lua"):format(tostring(ep.format)))
  end
  if type(ep.mapping) ~= "string" or ep.mapping == "" then
    bad("mapping", "is required (a module name such as mappings.crstates)")
  elseif not V.module_exists(ep.mapping, script_dir) then
    bad("mapping", ("module '%s' not found (neither in script_dir nor built in)"):format(ep.mapping))
  end
  if type(ep.db) ~= "string" or ep.db == "" then bad("db", "is required (a database name)") end
  if ep.rp ~= nil and (type(ep.rp) ~= "string" or ep.rp == "") then bad("rp", "must be a non-empty string") end
  if ep.precision ~= nil and not V.precisions[ep.precision] then
    bad("precision", ("'%s' must be ms, s, m or h"):format(tostring(ep.precision)))
  end
  return out
end

-- Every problem of cfg: list of {key, message}.
function V.config(cfg)
  local out = {}
  local function bad(key, msg) out[#out + 1] = { key, msg } end
  local to = cfg.traffic_ops or {}
  if to.url ~= nil then
    local p = V.url_problem(to.url)
    if p then bad("traffic_ops.url", p) end
  end
  for i, u in ipairs((cfg.influxdb or {}).urls or {}) do
    local p = V.url_problem(u)
    if p then bad(("influxdb.urls[%d]"):format(i), p) end
  end
  local s = cfg.summary or {}
  local has_pg = false
  for i, k in ipairs(s.sinks or {}) do
    if not V.sinks[k] then
      bad(("summary.sinks[%d]"):format(i), ("'%s' is not a summary sink: pg or api"):format(k))
    end
    if k == "pg" then has_pg = true end
  end
  if has_pg and s.enabled ~= false and not (cfg.postgres and cfg.postgres.conninfo) then
    bad("postgres.conninfo", "is required by summary.sinks = {\"pg\"} (or remove pg from the sinks)")
  end
  for i, r in ipairs(s.rollups or {}) do
    if not V.module_exists("rollups." .. r, cfg.script_dir) then
      bad(("summary.rollups[%d]"):format(i), ("'%s' is not a rollup module (available: %s)"):format(r,
        table.concat(V.rollups_available(cfg.script_dir), ", ")))
    end
  end
  local seen = { CacheStats = "the stock CacheStats endpoint", DsStats = "the stock DsStats endpoint" }
  local eps = cfg.endpoints or {}
  for k in pairs(eps) do
    if math.type(k) ~= "integer" then bad("endpoints." .. tostring(k), "endpoints is a list: { { name = ... }, ... }") end
  end
  for i, ep in ipairs(eps) do
    for _, p in ipairs(V.endpoint(ep, i, seen, cfg.script_dir)) do out[#out + 1] = p end
  end
  return out
end

-- Names of the rollup modules that exist (stock and script_dir).
function V.rollups_available(script_dir)
  local names, seen = {}, {}
  local ts = rawget(_G, "tstats")
  local list = ts and ts._embedded_modules and ts._embedded_modules() or {}
  for _, m in ipairs(list) do
    local n = m:match("^rollups%.([%w_]+)$")
    if n and not seen[n] then names[#names + 1] = n; seen[n] = true end
  end
  local dir = script_dir or (ts and ts.config and ts.config.script_dir)
  if dir then
    local p = io.popen("ls '" .. dir:gsub("'", "'\\''") .. "/rollups' 2>/dev/null")
    if p then
      for f in p:lines() do
        local n = f:match("^([%w_]+)%.lua$")
        if n and not seen[n] then names[#names + 1] = n; seen[n] = true end
      end
      p:close()
    end
  end
  if #names == 0 then
    for _, n in ipairs({ "daily", "ds_daily_max" }) do
      if V.module_exists("rollups." .. n) then names[#names + 1] = n end
    end
  end
  table.sort(names)
  return names
end

return V
