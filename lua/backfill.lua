-- `tstats backfill-cq --from --to` (Lua side, over tstats.influx): continuous queries never
-- backfill, so after an outage the 1-minute series have holes. This re-runs each CQ's
-- SELECT ... INTO (taken from lua/schema.lua, ATC.md 6.1) over the past window in bounded,
-- interval-aligned chunks, producers before consumers, then recomputes the daily rollups
-- of the closed days touched. Raw data lives 26 h (RP "daily"): older windows only rebuild
-- the CQ levels whose sources still exist.
local backfill = {}

local DAY = 86400
local UNIT = { S = 1, M = 60, H = 3600, D = 86400, W = 604800 }

local host = require "tstats.host"
local T, log = host.T, host.log

-- Same length as s, quoted text ('...' and "...", backslash escapes) blanked
-- and upper-cased, so keyword searches never hit a quoted name or literal.
local function mask(s)
  local out, q, i = {}, nil, 1
  while i <= #s do
    local c = s:sub(i, i)
    if q then
      if c == "\\" and i < #s then
        out[#out + 1] = "xx"
        i = i + 2
      elseif c == q then
        out[#out + 1] = c
        q = nil
        i = i + 1
      else
        out[#out + 1] = "x"
        i = i + 1
      end
    else
      if c == "'" or c == '"' then q = c end
      out[#out + 1] = c:upper()
      i = i + 1
    end
  end
  return table.concat(out)
end
backfill.mask = mask

-- Reads an identifier path (db.rp."meas") starting at i; returns the parts.
local function ident_path(s, i)
  local parts = {}
  while true do
    i = s:find("%S", i) or #s + 1
    local c = s:sub(i, i)
    if c == '"' then
      local j, buf = i + 1, {}
      while j <= #s do
        local d = s:sub(j, j)
        if d == "\\" then buf[#buf + 1] = s:sub(j + 1, j + 1); j = j + 2
        elseif d == '"' then break
        else buf[#buf + 1] = d; j = j + 1 end
      end
      parts[#parts + 1] = table.concat(buf)
      i = j + 1
    else
      local w = s:match("^[%w_]+", i)
      if not w then break end
      parts[#parts + 1] = w
      i = i + #w
    end
    if s:sub(i, i) ~= "." then break end
    i = i + 1
  end
  return parts
end

local function key_of(parts, db)
  if #parts == 3 then return table.concat(parts, "\0") end
  if #parts == 2 then return db .. "\0" .. parts[1] .. "\0" .. parts[2] end
  return db .. "\0\0" .. (parts[1] or "")
end

-- Parses a CREATE CONTINUOUS QUERY text into
-- { select=, into=key, from=key, interval=s, head=, cond=, tail= } or nil, err.
function backfill.parse_cq(query, db)
  local sel = query:match("[Bb][Ee][Gg][Ii][Nn]%s+(.-)%s+[Ee][Nn][Dd]%s*$")
  if not sel then return nil, "no BEGIN ... END" end
  local m = mask(sel)
  local gb = nil
  local p = 1
  while true do
    local a = m:find("%sGROUP%s+BY%s", p)
    if not a then break end
    gb, p = a, a + 1
  end
  if not gb then return nil, "no GROUP BY" end
  local num, unit = m:sub(gb):match("TIME%(%s*(%d+)(%a+)%s*%)")
  if not num or not UNIT[unit] then return nil, "no GROUP BY time(<n>s|m|h|d|w)" end
  local into_at = select(2, m:find("%sINTO%s"))
  local from_at = select(2, m:find("%sFROM%s"))
  if not into_at or not from_at then return nil, "no INTO or FROM" end
  local wa, wb = m:find("%sWHERE%s")
  local cq = {
    select = sel,
    interval = tonumber(num) * UNIT[unit],
    into = key_of(ident_path(sel, into_at + 1), db),
    from = key_of(ident_path(sel, from_at + 1), db),
    tail = sel:sub(gb + 1),
  }
  if wa and wa < gb then
    cq.head = sel:sub(1, wa - 1)
    cq.cond = sel:sub(wb + 1, gb - 1):match("^%s*(.-)%s*$")
  else
    cq.head = sel:sub(1, gb - 1)
  end
  return cq
end

-- The CQ's SELECT ... INTO restricted to [lo, hi): the CQ's own condition
-- (parenthesised, so an OR in it cannot swallow the time range) AND the window.
function backfill.windowed(cq, lo, hi)
  local rfc = require("summary").rfc3339
  local w = ("time >= '%s' AND time < '%s'"):format(rfc(lo), rfc(hi))
  if cq.cond then w = "(" .. cq.cond .. ") AND " .. w end
  return cq.head .. " WHERE " .. w .. " " .. cq.tail
end

-- Every CQ of the schema with its database renamed as configured, parsed and
-- ordered so that a CQ runs after the CQs producing the series it reads.
function backfill.plan(schema, cfg)
  local dbs = type(cfg) == "table" and type(cfg.databases) == "table" and cfg.databases or {}
  local rename = { cache_stats = dbs.cache, deliveryservice_stats = dbs.ds, daily_stats = dbs.daily }
  local list = {}
  for _, db in ipairs(schema.databases or {}) do
    local name = rename[db.name] or db.name
    for _, c in ipairs(db.cqs or {}) do
      local text = c.query
      if name ~= db.name then
        text = text:gsub(db.name:gsub("%p", "%%%0"), (name:gsub("%%", "%%%%")))
      end
      local cq, err = backfill.parse_cq(text, name)
      if not cq then return nil, ("CQ %s: %s"):format(tostring(c.name), err) end
      cq.name, cq.db = c.name, name
      list[#list + 1] = cq
    end
  end
  local producers = {}
  for _, cq in ipairs(list) do
    producers[cq.into] = producers[cq.into] or {}
    table.insert(producers[cq.into], cq)
  end
  -- stage = 1 + deepest producer's stage; the CQ graph is tiny and acyclic,
  -- but a cycle (a bad custom schema) must not recurse forever.
  local function stage(cq, depth)
    if depth > #list then return nil end
    if cq.stage then return cq.stage end
    local s = 1
    for _, p in ipairs(producers[cq.from] or {}) do
      if p ~= cq then
        local ps = stage(p, depth + 1)
        if not ps then return nil end
        if ps + 1 > s then s = ps + 1 end
      end
    end
    cq.stage = s
    return s
  end
  for i, cq in ipairs(list) do
    if not stage(cq, 0) then return nil, "CQ " .. tostring(cq.name) .. ": cyclic INTO/FROM" end
    cq.order = i
  end
  table.sort(list, function(a, b)
    if a.stage ~= b.stage then return a.stage < b.stage end
    return a.order < b.order
  end)
  return list
end

-- "YYYY-MM-DD" (whole day: --from is its 00:00, --to its 24:00) or
-- "YYYY-MM-DDTHH:MM:SSZ" (an instant), to unix seconds.
local function parse_when(s, is_to)
  local summary = require "summary"
  if type(s) ~= "string" then return nil, "missing time" end
  local d, hh, mm, ss = s:match("^(%d%d%d%d%-%d%d%-%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  if d then
    local base, err = summary.parse_date(d)
    if not base then return nil, err end
    hh, mm, ss = tonumber(hh), tonumber(mm), tonumber(ss)
    if hh > 23 or mm > 59 or ss > 59 then return nil, ("invalid time %q"):format(s) end
    return base + hh * 3600 + mm * 60 + ss
  end
  local base, err = summary.parse_date(s)
  if not base then return nil, err .. " (or YYYY-MM-DDTHH:MM:SSZ)" end
  return is_to and base + DAY or base
end
backfill.parse_when = parse_when

-- Runs the backfill. opts: chunk_hours (default 6), rollup (default true),
-- progress(i, n, item) with item.date a label (rollup_progress for the rollup phase),
-- dry_run (print the queries, run nothing), schema (default require "schema").
-- Returns { queries=, written=, days= } or nil, err.
function backfill.run(from, to, opts)
  opts = opts or {}
  local lo, err = parse_when(from, false)
  if not lo then return nil, "--from: " .. err end
  local hi
  hi, err = parse_when(to, true)
  if not hi then return nil, "--to: " .. err end
  if hi <= lo then return nil, "--to must be after --from" end
  local chunk = math.floor((tonumber(opts.chunk_hours) or 6) * 3600)
  if chunk < 60 then return nil, "--chunk must be at least 1 minute" end
  local ok, schema = pcall(require, "schema")
  schema = opts.schema or (ok and schema) or nil
  if type(schema) ~= "table" then return nil, "no CQ schema (lua/schema.lua): " .. tostring(schema) end
  local cqs
  cqs, err = backfill.plan(schema, T().config)
  if not cqs then return nil, err end

  -- Interval-aligned windows: a 1d CQ run over a 6 h chunk would store the
  -- max of 6 h as the day's value, so each query covers whole buckets only.
  local jobs = {}
  for _, cq in ipairs(cqs) do
    local iv = cq.interval
    local a, b = lo // iv * iv, -(-hi // iv) * iv
    local step = math.max(chunk // iv, 1) * iv
    for t = a, b - 1, step do jobs[#jobs + 1] = { cq = cq, lo = t, hi = math.min(t + step, b) } end
  end
  local summary = require "summary"
  local written = 0
  for i, j in ipairs(jobs) do
    local q = backfill.windowed(j.cq, j.lo, j.hi)
    local series, qerr
    if opts.dry_run then
      print(q .. ";")
      series = {}
    else
      series, qerr = T().influx.query(q, { db = j.cq.db, epoch = "s" })
    end
    if not series then
      return nil, ("CQ %s over %s..%s: %s"):format(j.cq.name, summary.rfc3339(j.lo), summary.rfc3339(j.hi), tostring(qerr))
    end
    for _, s in ipairs(series) do
      for _, v in ipairs(s.values or {}) do
        local w = s.columns and s.columns[2] == "written" and tonumber(v[2])
        if w then written = written + math.floor(w) end
      end
    end
    if opts.progress then opts.progress(i, #jobs, { date = ("%s %s"):format(j.cq.name, summary.rfc3339(j.lo)) }) end
  end
  log("info", ("backfill-cq: %d queries over %s..%s wrote %d points"):format(#jobs, summary.rfc3339(lo),
    summary.rfc3339(hi), written))

  local days = 0
  if opts.rollup ~= false and not opts.dry_run then
    local first, last = summary.day_start(lo), summary.day_start(hi - 1)
    local newest = summary.newest_closed(opts.now or T().now())
    if last > newest then last = newest end
    if first > last then
      log("info", "backfill-cq: no closed day in the window: daily rollups left to the daemon")
    else
      local n, rerr = summary.range(summary.date(first), summary.date(last), { progress = opts.rollup_progress or opts.progress, now = opts.now })
      if not n then return nil, "rollups: " .. tostring(rerr) end
      days = n
    end
  end
  return { queries = #jobs, written = written, days = days }
end

return backfill
