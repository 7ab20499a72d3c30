-- Custom derived metrics (Lua side): gathers the definitions of the config's
-- `metrics` list (tables, or names of lua/metrics/<name>.lua modules), checks
-- them (errors refuse the set, warnings are reported with file:line) and
-- compiles them into plain tables the C engine (src/derive.c) reads once per
-- load. Lua is never called per sample or per poll.
local M = {}

M.AGGS = { sum = true, min = true, max = true, mean = true, count = true, last = true, rate = true, ratio = true }
local AGG_LIST = "sum, min, max, mean, count, last, rate, ratio"

-- Keys a definition may carry, with the check of each value.
local KEYS = {
  name = "string", from = "string", over = "string", agg = "string", where = "table", group_by = "list",
  scale = "number", db = "string", rp = "string", field = "string", endpoint = "string", window = "integer",
  max_gap = "number", help = "string",
}

-- Tags the stock mappings put on points (cachestats: hostname, cdn,
-- cachegroup, type; dsstats: deliveryservice, cdn, cachegroup, type).
M.KNOWN_TAGS = { hostname = true, cdn = true, cachegroup = true, type = true, deliveryservice = true }

-- Measurements the stock mappings produce from what Traffic Monitor sends
-- (CacheStats with the usual TRAFFIC_STATS profile, and DsStats). Names
-- under ats.* and system.* depend on the profile's parameters: they are
-- accepted without a warning.
M.KNOWN_STATS = {}
for _, s in ipairs({
  "bandwidth", "maxKbps", "inBytes", "outBytes", "speed", "loadavg", "availableBandwidthInKbps",
  "availableBandwidthInMbps", "kbps", "gbps", "queryTime",
  "tps_2xx", "tps_3xx", "tps_4xx", "tps_5xx", "tps_total", "status_2xx", "status_3xx", "status_4xx",
  "status_5xx", "out_bytes", "in_bytes", "caches-configured", "caches-reporting", "caches-available",
}) do M.KNOWN_STATS[s] = true end

local function known_stat(s)
  return M.KNOWN_STATS[s] or s:match("^ats%.") ~= nil or s:match("^system%.") ~= nil
end

-- Edit distance (Levenshtein) for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(word, set)
  local best, bestd
  for k in pairs(set) do
    local d = distance(word, k)
    if not bestd or d < bestd or (d == bestd and k < best) then best, bestd = k, d end
  end
  if bestd and bestd <= math.max(2, #word // 4) then return best end
end

-- Line of a definition in its source text: the line holding `name = "<name>"`.
local function line_of(text, name)
  if type(text) ~= "string" or type(name) ~= "string" then return nil end
  local ln = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    local v = line:match("name%s*=%s*[\"']([^\"']*)[\"']")
    if v == name then return ln end
  end
end

local function read_text(path)
  if type(path) ~= "string" or type(io) ~= "table" then return nil end
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Source of a module (a file of script_dir or the embedded copy): path, text.
local function module_source(modname)
  if package.searchpath and package.path then
    local p = package.searchpath(modname, package.path)
    if p then return p, read_text(p) end
  end
  local ts = rawget(_G, "tstats")
  if type(ts) == "table" and type(ts._embedded_source) == "function" then
    local ok, src = pcall(ts._embedded_source, modname)
    if ok and type(src) == "string" then return "[tstats]/" .. modname:gsub("%.", "/") .. ".lua", src end
  end
  return modname:gsub("%.", "/") .. ".lua", nil
end

-- metric { ... }: the constructor config files and modules may use; it
-- records where the definition was written (file:line) for messages.
function M.metric(t)
  if type(t) == "table" then
    local info = debug and debug.getinfo and debug.getinfo(2, "Sl")
    if info and info.currentline and info.currentline > 0 then
      local src = info.source and info.source:match("^@(.*)") or info.short_src or "?"
      rawset(t, "__where", src .. ":" .. info.currentline)
    end
  end
  return t
end

-- The config's definitions, flattened: { {def=, where=} ... }, problems.
function M.gather(list, cfg_path)
  local out, problems = {}, {}
  local cfg_file = cfg_path or "[embedded]config.lua"
  local cfg_text = read_text(cfg_path)
  local function problem(level, where, msg) problems[#problems + 1] = { level = level, where = where, msg = msg } end
  if list == nil then return out, problems end
  if type(list) ~= "table" then
    problem("error", cfg_file, "metrics: must be a list of definitions or module names")
    return out, problems
  end
  for i, item in ipairs(list) do
    if type(item) == "string" then
      local modname = item:find("%.") and item or ("metrics." .. item)
      local path, text = module_source(modname)
      local ok, mod = pcall(require, modname)
      if not ok then
        problem("error", cfg_file, ("metrics[%d]: module %s: %s"):format(i, modname, tostring(mod):match("^[^\n]*")))
      else
        local defs = type(mod) == "table" and (mod.metrics or mod) or nil
        if type(defs) ~= "table" then
          problem("error", path, ("module %s must return a list of definitions"):format(modname))
        else
          for j, d in ipairs(defs) do
            local where = type(d) == "table" and rawget(d, "__where")
            if not where then
              local ln = type(d) == "table" and line_of(text, d.name)
              where = path .. (ln and ":" .. ln or "") .. (ln and "" or (" [" .. j .. "]"))
            end
            out[#out + 1] = { def = d, where = where }
          end
        end
      end
    elseif type(item) == "table" then
      local where = rawget(item, "__where")
      if not where then
        local ln = line_of(cfg_text, item.name)
        where = cfg_file .. (ln and ":" .. ln or (" metrics[" .. i .. "]"))
      end
      out[#out + 1] = { def = item, where = where }
    else
      problem("error", cfg_file, ("metrics[%d]: a definition (table) or a module name (string) expected, got %s"):format(i, type(item)))
    end
  end
  for k in pairs(list) do
    if math.type(k) ~= "integer" then problem("error", cfg_file, "metrics: must be a list (no named keys), found " .. tostring(k)) end
  end
  return out, problems
end

local function is_list_of_strings(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
  end
  return true
end

-- One definition → compiled table, or nil; problems appended.
local function compile_one(d, where, problem)
  if type(d) ~= "table" then problem("error", where, "a definition must be a table") return nil end
  local bad = false
  local function err(msg) problem("error", where, msg); bad = true end
  local function warn(msg) problem("warning", where, msg) end
  local label = type(d.name) == "string" and d.name or "?"
  for k, v in pairs(d) do
    if k == "__where" then -- luacheck: ignore 542
    elseif type(k) ~= "string" or not KEYS[k] then
      local s = type(k) == "string" and suggest(k, KEYS)
      err(("%s: unknown key %s%s"):format(label, tostring(k), s and (" (did you mean " .. s .. "?)") or ""))
    else
      local t = KEYS[k]
      if t == "list" then
        if not is_list_of_strings(v) then err(("%s: %s must be a list of strings"):format(label, k)) end
      elseif t == "integer" then
        if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
          err(("%s: %s must be an integer (seconds)"):format(label, k))
        end
      elseif type(v) ~= t then
        err(("%s: %s must be a %s, got %s"):format(label, k, t, type(v)))
      end
    end
  end
  if type(d.name) ~= "string" or d.name == "" then err("name (the measurement written) is required") end
  if type(d.from) ~= "string" or d.from == "" then err(label .. ": from (the input stat) is required") end
  if type(d.agg) ~= "string" then
    err(label .. ": agg is required (" .. AGG_LIST .. ")")
  elseif not M.AGGS[d.agg] then
    local s = suggest(d.agg, M.AGGS)
    err(("%s: agg %q is not one of %s%s"):format(label, d.agg, AGG_LIST, s and (" (did you mean " .. s .. "?)") or ""))
  end
  if d.agg == "ratio" then
    if type(d.over) ~= "string" or d.over == "" then err(label .. ": ratio needs over (the denominator stat)") end
  elseif d.over ~= nil then
    err(label .. ": over is only for agg = \"ratio\"")
  end
  if d.window ~= nil and type(d.window) == "number" then
    if d.window < 1 then err(label .. ": window must be at least 1 (seconds)") end
    if d.agg == "rate" or d.agg == "ratio" then err(label .. ": window is for sum/min/max/mean/count/last, not " .. tostring(d.agg)) end
  end
  if d.max_gap ~= nil then
    if d.agg ~= "rate" then err(label .. ": max_gap is only for agg = \"rate\"")
    elseif type(d.max_gap) == "number" and not (d.max_gap > 0) then err(label .. ": max_gap must be > 0 (seconds)") end
  end
  if type(d.scale) == "number" and (d.scale ~= d.scale or d.scale == math.huge or d.scale == -math.huge) then
    err(label .. ": scale must be a finite number")
  end
  if d.field == "time" or d.field == "" then err(label .. ": field cannot be empty or 'time'") end
  local where_c = {}
  if type(d.where) == "table" then
    local keys = {}
    for k in pairs(d.where) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local v = d.where[k]
      local clause = { key = k, neg = false, values = {} }
      if type(k) ~= "string" or k == "" then
        err(label .. ": where keys must be tag names")
      else
        if type(v) == "table" and v["not"] ~= nil then
          clause.neg = true
          for kk in pairs(v) do if kk ~= "not" then err(("%s: where.%s: only {not = ...} is understood"):format(label, k)) end end
          v = v["not"]
        end
        if type(v) == "string" then
          clause.values = { v }
        elseif is_list_of_strings(v) and #v > 0 then
          clause.values = v
        else
          err(("%s: where.%s must be a string, a list of strings or {not = ...}"):format(label, k))
        end
        if not M.KNOWN_TAGS[k] then
          local s = suggest(k, M.KNOWN_TAGS)
          warn(("%s: where.%s: not a tag of the stock mappings%s"):format(label, k, s and (" (did you mean " .. s .. "?)") or ""))
        end
      end
      where_c[#where_c + 1] = clause
    end
  end
  local group = {}
  if is_list_of_strings(d.group_by) then
    local seen = {}
    for _, g in ipairs(d.group_by) do
      if g == "" or g == "time" then err(label .. ": group_by cannot hold '' or 'time'") end
      if seen[g] then warn(("%s: group_by lists %s twice"):format(label, g)) end
      if not seen[g] then group[#group + 1] = g end
      seen[g] = true
      if not M.KNOWN_TAGS[g] then
        local s = suggest(g, M.KNOWN_TAGS)
        warn(("%s: group_by %s: not a tag of the stock mappings%s"):format(label, g, s and (" (did you mean " .. s .. "?)") or ""))
      end
    end
    table.sort(group)
  end
  if d.group_by == nil or (is_list_of_strings(d.group_by) and not (function()
    for _, g in ipairs(d.group_by) do if g == "cdn" then return true end end
  end)()) then
    warn(label .. ": group_by has no cdn: every CDN writes its own point of this series at the same time " ..
      "(the last one wins in InfluxDB)")
  end
  if type(d.from) == "string" and d.from ~= "" and not known_stat(d.from) then
    local s = suggest(d.from, M.KNOWN_STATS)
    warn(("%s: from %s: not a stat Traffic Monitor is known to send%s"):format(label, d.from, s and (" (did you mean " .. s .. "?)") or ""))
  end
  if type(d.over) == "string" and d.over ~= "" and not known_stat(d.over) then
    local s = suggest(d.over, M.KNOWN_STATS)
    warn(("%s: over %s: not a stat Traffic Monitor is known to send%s"):format(label, d.over, s and (" (did you mean " .. s .. "?)") or ""))
  end
  if bad then return nil end
  return {
    name = d.name, from = d.from, over = d.over, agg = d.agg, where = where_c, group_by = group,
    scale = d.scale or 1.0, db = d.db, rp = d.rp, field = d.field or "value", endpoint = d.endpoint,
    window_ms = d.window and math.tointeger(d.window * 1000) or 0,
    max_gap_ms = math.tointeger(math.floor((d.max_gap or 300) * 1000)),
    where_text = where,
  }
end

-- Checks and compiles a config's definitions. Returns compiled (nil when
-- any error), problems ({level, where, msg}, errors first).
function M.compile(list, cfg_path)
  local items, problems = M.gather(list, cfg_path)
  local function problem(level, where, msg) problems[#problems + 1] = { level = level, where = where, msg = msg } end
  local out, names = {}, {}
  for _, it in ipairs(items) do
    local c = compile_one(it.def, it.where, problem)
    if c then
      local key = c.name .. "\0" .. tostring(c.db) .. "\0" .. tostring(c.rp) .. "\0" .. c.field
      if names[key] then
        problem("warning", it.where, ("%s: same measurement and field as the definition at %s: both write one series"):format(c.name, names[key]))
      end
      names[key] = it.where
      out[#out + 1] = c
    end
  end
  local nerr = 0
  for _, p in ipairs(problems) do if p.level == "error" then nerr = nerr + 1 end end
  table.sort(problems, function(a, b)
    if a.level ~= b.level then return a.level == "error" end
    return a.where < b.where
  end)
  if nerr > 0 then return nil, problems end
  return out, problems
end

-- One line per problem: "file:line: error: message".
function M.format(problems)
  local lines = {}
  for _, p in ipairs(problems) do lines[#lines + 1] = ("%s: %s: %s"):format(p.where, p.level, p.msg) end
  return table.concat(lines, "\n")
end

-- For the C core (daemon start, SIGHUP) and `tstats check`: the compiled
-- list of tstats.config.metrics (or nil), the problems as text, and the
-- number of errors.
function M.load(cfg, cfg_path)
  cfg = cfg or (rawget(_G, "tstats") and rawget(_G, "tstats").config) or {}
  local compiled, problems = M.compile(cfg.metrics, cfg_path)
  local nerr = 0
  for _, p in ipairs(problems) do if p.level == "error" then nerr = nerr + 1 end end
  return compiled, M.format(problems), nerr, #problems - nerr
end

return M
