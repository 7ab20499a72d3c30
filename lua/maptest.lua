-- The offline mapping loop (Lua side): `tstats map` runs a mapping over a saved
-- Traffic Monitor payload through the real C collector (tstats._map_run, file://
-- URLs) and prints the line protocol and a per-measurement summary; `tstats test`
-- runs the example blocks (M.examples) that mapping and rollup modules carry.
local tstats = require "tstats"

local T = {}

local function eprint(s) io.stderr:write(s, "\n") end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD") or "."
  return pwd .. "/" .. p
end

-- tm_cachestats | tm_dsstats from the payload's shape, or nil.
function T.guess_format(body)
  local head = body:sub(1, 65536)
  if head:find('"deliveryService"%s*:') then return "tm_dsstats" end
  if head:find('"caches"%s*:') then return "tm_cachestats" end
end

local DEFAULT_MAPPING = { tm_cachestats = "mappings.cachestats", tm_dsstats = "mappings.dsstats" }
local ENDPOINT_NAME = { tm_cachestats = "CacheStats", tm_dsstats = "DsStats", lua = "Payload" }

-- The host map (ctx.servers) from a saved Traffic Ops servers answer (or a list of records).
function T.host_map(servers)
  if type(servers) ~= "table" then return {} end
  local list = servers.response or servers
  return require("plan").build(list, {}, tstats.config).servers or {}
end

-- Runs one mapping over one payload file. spec = { file=, format=, mapping=, cdn=, endpoint=,
-- servers= (decoded), db=, rp=, precision=, max_age= }. Returns result, errors (Lua errors
-- counted during the run) or nil, err.
function T.run(spec)
  local cfg = tstats.config
  local fmt = spec.format
  local eps = {
    cdn = spec.cdn or "cdn1", name = spec.endpoint or ENDPOINT_NAME[fmt] or "Payload", format = fmt,
    urls = { "file://" .. abspath(spec.file) },
    db = spec.db or (fmt == "tm_dsstats" and cfg.databases.ds or cfg.databases.cache),
    rp = spec.rp or (fmt == "tm_dsstats" and cfg.retention.ds or cfg.retention.cache),
    precision = spec.precision or "ms",
    mapping = spec.mapping or DEFAULT_MAPPING[fmt],
  }
  if not eps.mapping then return nil, "format " .. tostring(fmt) .. " needs --mapping" end
  local plan = { endpoints = { eps }, servers = T.host_map(spec.servers), cdns = { [eps.cdn] = { monitors = {} } } }
  local before = tstats.counters()
  -- saved payloads are old: no sample age cutoff unless asked for
  local r = tstats._map_run(plan, cfg.collect.timeout or 10, spec.max_age or 0, spec.derive)
  local after = tstats.counters()
  local errors = 0
  for _, k in ipairs({ "lua_errors", "mapping_errors" }) do errors = errors + ((after[k] or 0) - (before[k] or 0)) end
  r.lua_errors = errors
  return r
end

-- Measurement and series key of one line of line protocol (escapes honoured).
local function split_line(line)
  local i, n = 1, #line
  local meas_end, key_end
  while i <= n do
    local ch = line:sub(i, i)
    if ch == "\\" then i = i + 1
    elseif ch == "," and not meas_end then meas_end = i - 1
    elseif ch == " " then key_end = i - 1; break end
    i = i + 1
  end
  key_end = key_end or n
  meas_end = meas_end or key_end
  return line:sub(1, meas_end), line:sub(1, key_end)
end
T.split_line = split_line

function T.lines(r)
  local out = {}
  for _, b in ipairs(r.batches or {}) do
    for l in b.body:gmatch("[^\n]+") do out[#out + 1] = l end
  end
  return out
end

function T.summary(r)
  local per, order = {}, {}
  for _, l in ipairs(T.lines(r)) do
    local m, key = split_line(l)
    local e = per[m]
    if not e then e = { points = 0, series = {}, nseries = 0 }; per[m] = e; order[#order + 1] = m end
    e.points = e.points + 1
    if not e.series[key] then e.series[key] = true; e.nseries = e.nseries + 1 end
  end
  table.sort(order)
  local w = #"measurement"
  for _, m in ipairs(order) do if #m > w then w = #m end end
  local fmt = "# %-" .. w .. "s %8s %8s"
  local out = { fmt:format("measurement", "points", "series") }
  for _, m in ipairs(order) do out[#out + 1] = fmt:format(m, per[m].points, per[m].nseries) end
  out[#out + 1] = ("# %d points in %d measurements; %d endpoint(s) failed; skipped: %d old, %d non-numeric, %d without time; %d Lua calls, %d Lua errors")
    :format(r.points, #order, r.endpoints_failed, r.skipped_old, r.skipped_non_numeric, r.skipped_no_time, r.lua_calls, r.lua_errors)
  return table.concat(out, "\n")
end

local function mapping_name(m)
  if not m then return nil end
  if m:find("%.") then return m end
  return "mappings." .. m
end

function T.map_cmd(opts)
  local body, err = read(opts.payload)
  if not body then eprint("tstats map: cannot read --payload: " .. tostring(err)); return 2 end
  local fmt = opts.format or T.guess_format(body)
  if not fmt then
    eprint("tstats map: cannot tell the payload's format (no \"caches\" or \"deliveryService\"): give --format")
    return 2
  end
  local mapping = mapping_name(opts.mapping)
  if fmt == "lua" and not mapping then eprint("tstats map: --format lua needs --mapping"); return 2 end
  mapping = mapping or DEFAULT_MAPPING[fmt]
  local V = require "validate"
  if not V.module_exists(mapping, tstats.config.script_dir) then
    eprint(("tstats map: mapping module '%s' not found (neither in script_dir nor built in)"):format(mapping))
    return 2
  end
  local servers
  if opts.servers then
    local s, serr = read(opts.servers)
    if not s then eprint("tstats map: cannot read --servers: " .. tostring(serr)); return 2 end
    local ok, doc = pcall(tstats.json.decode, s)
    if not ok or type(doc) ~= "table" then eprint("tstats map: --servers is not JSON: " .. tostring(doc)); return 2 end
    servers = doc
  end
  local r, rerr = T.run { file = opts.payload, format = fmt, mapping = mapping, cdn = opts.cdn, servers = servers,
    db = opts.db, rp = opts.rp, endpoint = opts.endpoint, derive = true }
  if not r then eprint("tstats map: " .. tostring(rerr)); return 2 end
  if not opts.summary then
    for _, b in ipairs(r.batches) do
      print(("# db=%s rp=%s precision=%s (%d points)"):format(b.db, b.rp, b.precision, b.points))
      io.stdout:write(b.body)
    end
  end
  print(T.summary(r))
  if r.endpoints_failed > 0 or r.lua_errors > 0 then return 1 end
  return 0
end

-- ---- tstats test ------------------------------------------------------------------

local function diff(want, got)
  local w, g = {}, {}
  for _, l in ipairs(want) do w[l] = (w[l] or 0) + 1 end
  for _, l in ipairs(got) do g[l] = (g[l] or 0) + 1 end
  local out = {}
  for _, l in ipairs(want) do
    if (g[l] or 0) > 0 then g[l] = g[l] - 1 else out[#out + 1] = "-" .. l end
  end
  for _, l in ipairs(got) do
    if (w[l] or 0) > 0 then w[l] = w[l] - 1 else out[#out + 1] = "+" .. l end
  end
  return out
end

local function lines_of(s)
  local out = {}
  for l in tostring(s or ""):gmatch("[^\n]+") do
    l = l:gsub("^%s+", ""):gsub("%s+$", "")
    if l ~= "" then out[#out + 1] = l end
  end
  return out
end

-- A line as key, fields sorted by name, time: field order means nothing in line protocol.
local function tokens(l)
  local parts, cur, i, inq = {}, {}, 1, false
  while i <= #l do
    local ch = l:sub(i, i)
    if ch == "\\" then cur[#cur + 1] = l:sub(i, i + 1); i = i + 1
    elseif ch == '"' then inq = not inq; cur[#cur + 1] = ch
    elseif ch == " " and not inq then parts[#parts + 1] = table.concat(cur); cur = {}
    else cur[#cur + 1] = ch end
    i = i + 1
  end
  parts[#parts + 1] = table.concat(cur)
  return parts
end

local function split_fields(f)
  local out, cur, i, inq = {}, {}, 1, false
  while i <= #f do
    local ch = f:sub(i, i)
    if ch == "\\" then cur[#cur + 1] = f:sub(i, i + 1); i = i + 1
    elseif ch == '"' then inq = not inq; cur[#cur + 1] = ch
    elseif ch == "," and not inq then out[#out + 1] = table.concat(cur); cur = {}
    else cur[#cur + 1] = ch end
    i = i + 1
  end
  out[#out + 1] = table.concat(cur)
  return out
end

local function normal(l, no_time)
  local p = tokens(l)
  if p[2] then
    local f = split_fields(p[2])
    table.sort(f)
    p[2] = table.concat(f, ",")
  end
  if no_time then p[3] = nil end
  return table.concat(p, " ", 1, math.min(#p, 3))
end

local function mapping_example(mod, ex)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(ex.payload or "")
  f:close()
  local fmt = ex.format or T.guess_format(ex.payload or "") or "lua"
  local r, err = T.run { file = path, format = fmt, mapping = mod, cdn = ex.cdn, endpoint = ex.endpoint,
    servers = ex.servers, db = ex.db, rp = ex.rp }
  os.remove(path)
  if not r then return { "cannot run: " .. tostring(err) } end
  local got, want = T.lines(r), lines_of(ex.expect)
  for i, l in ipairs(got) do got[i] = normal(l, ex.ignore_time) end
  for i, l in ipairs(want) do want[i] = normal(l, ex.ignore_time) end
  local d = diff(want, got)
  if r.lua_errors > 0 then table.insert(d, 1, ("%d Lua error(s) (logged above with file:line)"):format(r.lua_errors)) end
  return d
end

local function fmt_row(r)
  return ("%s %s %s %s %s"):format(tostring(r.cdn), tostring(r.deliveryservice or "all"), tostring(r.stat_name),
    require("summary").num(r.value), tostring(r.time))
end

local function rollup_example(name, mod, ex)
  local summary = require "summary"
  local start = type(ex.day) == "string" and summary.parse_date(ex.day) or ex.day
  if not start then return { "example day must be YYYY-MM-DD, got " .. tostring(ex.day) } end
  local day = summary.day(start)
  local i = 0
  local ctx = {
    cdns = ex.cdns, config = tstats.config, rfc3339 = summary.rfc3339, ident = summary.ident, literal = summary.literal,
    cdn_where = summary.cdn_where(ex.cdns),
    query = function(q)
      i = i + 1
      local a = ex.answers and ex.answers[i]
      if not a then error(("example gives no answer to query %d: %s"):format(i, q), 0) end
      if a.match and not q:find(a.match) then
        error(("query %d does not match %q: %s"):format(i, a.match, q), 0)
      end
      return a.series or {}
    end,
  }
  local ok, rows, err = pcall(mod.compute, day, ctx)
  if not ok then return { "compute raised: " .. tostring(rows) } end
  if type(rows) ~= "table" then return { "compute failed: " .. tostring(err) } end
  local got, want = {}, {}
  for _, r in ipairs(rows) do got[#got + 1] = fmt_row(r) end
  for _, r in ipairs(ex.expect or {}) do want[#want + 1] = fmt_row(r) end
  return diff(want, got)
end

-- Module names that may carry examples: embedded and script_dir mappings/rollups.
local function candidates()
  local names, seen = {}, {}
  local function add(n) if not seen[n] then seen[n] = true; names[#names + 1] = n end end
  for _, m in ipairs(tstats._embedded_modules and tstats._embedded_modules() or {}) do
    if m:match("^mappings%.") or m:match("^rollups%.") then add(m) end
  end
  local dir = tstats.config.script_dir
  if dir then
    for _, sub in ipairs({ "mappings", "rollups" }) do
      local p = io.popen("ls '" .. dir:gsub("'", "'\\''") .. "/" .. sub .. "' 2>/dev/null")
      if p then
        for f in p:lines() do
          local n = f:match("^([%w_]+)%.lua$")
          if n then add(sub .. "." .. n) end
        end
        p:close()
      end
    end
  end
  table.sort(names)
  return names
end

function T.test_cmd(opts, args)
  local mods = #args > 0 and args or candidates()
  local n, failed, skipped = 0, 0, {}
  for _, m in ipairs(mods) do
    local ok, mod = pcall(require, m)
    if not ok then
      print(("FAIL %s: cannot load: %s"):format(m, tostring(mod)))
      failed = failed + 1
    elseif type(mod) ~= "table" or type(mod.examples) ~= "table" or #mod.examples == 0 then
      skipped[#skipped + 1] = m
      if #args > 0 then print(("FAIL %s: no examples (M.examples)"):format(m)); failed = failed + 1 end
    else
      for i, ex in ipairs(mod.examples) do
        n = n + 1
        local label = ("%s example %d%s"):format(m, i, ex.name and (" (" .. ex.name .. ")") or "")
        local d
        if m:match("^rollups%.") or type(mod.compute) == "function" then
          d = rollup_example(m, mod, ex)
        else
          d = mapping_example(m, ex)
        end
        if #d == 0 then
          if opts.verbose then print("ok   " .. label) end
        else
          failed = failed + 1
          print("FAIL " .. label .. ": - expected, + got")
          for _, l in ipairs(d) do print("  " .. l) end
        end
      end
    end
  end
  if #skipped > 0 and opts.verbose then print("# without examples: " .. table.concat(skipped, ", ")) end
  print(("# %d examples, %d failed"):format(n, failed))
  if n == 0 and failed == 0 then eprint("tstats test: no examples found"); return 1 end
  return failed == 0 and 0 or 1
end

return T
