-- Daily summary driver (Lua side; the daemon calls summary.tick, `tstats rollup` calls
-- summary.range, `tstats backfill-cq` calls it through lua/backfill.lua). Runs the rollup
-- modules (lua/rollups/*.lua) for whole UTC days and writes their rows to InfluxDB
-- daily_stats and to Traffic Ops' stats_summary (PostgreSQL via tstats.pg, or the TO API).
-- Days are unix seconds (floor(t/86400)*86400), never day-of-month arithmetic.
local summary = {}

local DAY = 86400

local host = require "tstats.host"
local T, log, count = host.T, host.log, host.count

local function config()
  return T().config or {}
end

local function section(name)
  local s = config()[name]
  return type(s) == "table" and s or {}
end

---------------------------------------------------------------------------
-- Dates: UTC day arithmetic in unix seconds (lua/tstats/civil.lua).
local civil = require "tstats.civil"
local days_from_civil, civil_from_days = civil.days_from_civil, civil.civil_from_days

-- Start (unix s, integer) of the UTC day holding t.
function summary.day_start(t)
  return math.floor(t) // DAY * DAY
end

function summary.date(t)
  local y, m, d = civil_from_days(math.floor(t) // DAY)
  return string.format("%04d-%02d-%02d", y, m, d)
end

function summary.rfc3339(t)
  t = math.floor(t)
  local s = t % DAY
  return string.format("%sT%02d:%02d:%02dZ", summary.date(t), s // 3600, s % 3600 // 60, s % 60)
end

-- "YYYY-MM-DD" -> start of that UTC day, or nil, err. 2026-02-30 is refused.
function summary.parse_date(s)
  if type(s) ~= "string" then return nil, "date must be a string YYYY-MM-DD" end
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  if not y then return nil, ("invalid date %q (want YYYY-MM-DD)"):format(s) end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  local z = days_from_civil(y, m, d)
  local y2, m2, d2 = civil_from_days(z)
  if m < 1 or m > 12 or y2 ~= y or m2 ~= m or d2 ~= d then return nil, ("invalid date %q"):format(s) end
  return z * DAY
end

-- The day table rollups receive: { start=, stop=, date= }.
function summary.day(start)
  start = summary.day_start(start)
  return { start = start, stop = start + DAY, date = summary.date(start) }
end

local function as_day(d)
  if type(d) == "table" then
    local day = summary.day(d.start)
    day.rollups = d.rollups
    return day
  end
  if type(d) == "string" then
    local s, err = summary.parse_date(d)
    if not s then error(err, 3) end
    return summary.day(s)
  end
  if type(d) == "number" then return summary.day(d) end
  error("day expected (table, YYYY-MM-DD or unix seconds)", 3)
end

---------------------------------------------------------------------------
-- InfluxQL quoting and number text.

function summary.ident(s)
  return '"' .. tostring(s):gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
end

function summary.literal(s)
  return "'" .. tostring(s):gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
end

-- " AND (cdn = 'a' OR cdn = 'b')" for a CDN filter, "" for none.
function summary.cdn_where(cdns)
  if cdns == nil then return "" end
  local parts = {}
  for _, c in ipairs(cdns) do parts[#parts + 1] = "cdn = " .. summary.literal(c) end
  if #parts == 0 then return "" end
  return " AND (" .. table.concat(parts, " OR ") .. ")"
end

-- Shortest text that reads back as the same number (log lines operators grep).
function summary.num(v)
  if math.type(v) == "integer" then return tostring(v) end
  local a = math.abs(v)
  if a == 0 or (a >= 1e-5 and a < 1e15) then
    -- Plain decimals read better than 9e+03 in a log.
    for k = 0, 17 do
      local s = string.format("%." .. k .. "f", v)
      if tonumber(s) == v then return s end
    end
  end
  for p = 1, 17 do
    local s = string.format("%." .. p .. "g", v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end

local function list_of(v, default)
  if v == nil then return default end
  if type(v) == "string" then return { v } end
  local out = {}
  for _, x in ipairs(v) do out[#out + 1] = x end
  return out
end

---------------------------------------------------------------------------
-- Rollup modules.

local loaded = {}

-- The rollup module `name` (lua/rollups/<name>.lua or script_dir/rollups/<name>.lua),
-- checked against the contract, or nil, err.
function summary.load_rollup(name)
  if loaded[name] then return loaded[name] end
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    return nil, ("invalid rollup name %q"):format(tostring(name))
  end
  local ok, mod = pcall(require, "rollups." .. name)
  if not ok then return nil, ("rollup %s: cannot load: %s"):format(name, tostring(mod)) end
  if type(mod) ~= "table" or type(mod.compute) ~= "function" then
    return nil, ("rollup %s: module must return a table with compute(day, ctx)"):format(name)
  end
  if type(mod.stats) ~= "table" or #mod.stats == 0 then
    return nil, ("rollup %s: module must list its stat names in .stats"):format(name)
  end
  for _, s in ipairs(mod.stats) do
    if type(s) ~= "string" or s == "" then return nil, ("rollup %s: stat names must be strings"):format(name) end
  end
  loaded[name] = mod
  return mod
end

function summary.rollup_names(opts)
  return list_of(opts and opts.rollups, list_of(section("summary").rollups, { "daily" }))
end

local function context(cdns)
  local cfg = config()
  return {
    cdns = cdns,
    config = cfg,
    query = function(q, db) return T().influx.query(q, { db = db, epoch = "s" }) end,
    rfc3339 = summary.rfc3339,
    ident = summary.ident,
    literal = summary.literal,
    cdn_where = summary.cdn_where(cdns),
  }
end

-- Rows checked and normalised; bad ones are logged, counted and dropped (one
-- hostile value must not cost the day its other rows).
local function clean_rows(mod, name, day, rows)
  local allowed = {}
  for _, s in ipairs(mod.stats) do allowed[s] = true end
  local out = {}
  for i, r in ipairs(rows) do
    local why
    if type(r) ~= "table" then
      why = "not a table"
    elseif type(r.cdn) ~= "string" or r.cdn == "" then
      why = "cdn missing"
    elseif not allowed[r.stat_name] then
      why = ("stat_name %q not in the rollup's stats"):format(tostring(r.stat_name))
    elseif type(r.value) ~= "number" or r.value ~= r.value or r.value == math.huge or r.value == -math.huge then
      why = "value is not a finite number"
    elseif r.deliveryservice ~= nil and (type(r.deliveryservice) ~= "string" or r.deliveryservice == "") then
      why = "deliveryservice must be a non-empty string"
    elseif r.time ~= nil and math.type(r.time) ~= "integer" then
      why = "time must be integer unix seconds"
    end
    if why then
      log("warn", ("rollup %s %s: row %d dropped: %s"):format(name, day.date, i, why))
      count("summary_rows_invalid")
    else
      out[#out + 1] = { cdn = r.cdn, deliveryservice = r.deliveryservice or "all", stat_name = r.stat_name,
                        value = r.value + 0.0, time = r.time or day.start }
    end
  end
  return out
end

local function log_row(r)
  local v = summary.num(r.value)
  if r.stat_name == "daily_maxgbps" then
    log("info", ("max gbps for cdn %s = %s"):format(r.cdn, v))
  elseif r.stat_name == "daily_bytesserved" then
    log("info", ("TBytes served for cdn %s = %s"):format(r.cdn, v))
  else
    log("info", ("%s for cdn %s ds %s = %s"):format(r.stat_name, r.cdn, r.deliveryservice, v))
  end
end

---------------------------------------------------------------------------
-- Sinks. InfluxDB daily_stats always; "pg" and "api" as configured.

local state = { pg = nil, to = nil, done = {} }

-- For specs: forget connections, loaded rollups and the in-memory done set.
function summary._reset()
  if state.pg then pcall(state.pg.close, state.pg) end
  state = { pg = nil, to = nil, done = {} }
  loaded = {}
  require("summary_state")._reset()
end

local function sinks()
  local s = list_of(section("summary").sinks, { "pg" })
  local set = {}
  for _, name in ipairs(s) do
    if name ~= "pg" and name ~= "api" then return nil, ("unknown summary sink %q (pg or api)"):format(name) end
    set[name] = true
  end
  return set
end

local function pg_conn()
  if state.pg then return state.pg end
  local conninfo = section("postgres").conninfo
  if type(conninfo) ~= "string" or conninfo == "" then
    return nil, "summary sink pg needs postgres.conninfo"
  end
  local pg = T().pg
  if type(pg) ~= "table" then return nil, "this tstats has no PostgreSQL support" end
  -- In the daemon each call runs on the loop and yields; the per-call bound
  -- outlasts the server's own statement_timeout (which gives the clearer
  -- error), and catches a server that is hung and would never say it, also
  -- when there is no statement_timeout: a summary never waits forever.
  local st = tonumber(section("postgres").statement_timeout) or 10
  local bound = tonumber(section("postgres").call_timeout) or (st > 0 and st + 2 or 30)
  local c, err = pg.connect(conninfo, { timeout = bound })
  if not c then return nil, err end
  state.pg = c
  return c
end

local DELETE_SQL = "DELETE FROM stats_summary WHERE stat_date = $1::date AND cdn_name = $2"
  .. " AND deliveryservice_name = $3 AND stat_name = $4"
local INSERT_SQL = "INSERT INTO stats_summary (cdn_name, deliveryservice_name, stat_name, stat_value,"
  .. " summary_time, stat_date) VALUES ($1, $2, $3, $4::double precision, now(), $5::date)"
-- Serialises concurrent writers (two tstats during a fail-over): without a unique
-- key, two interleaved delete+insert transactions would both insert.
local LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('tstats.stats_summary'))"

-- A lock another session holds (or a statement PostgreSQL is slow to run)
-- must cost the summary a bounded time, after which the day fails and the next
-- tick retries it (in the daemon the wait yields: polls go on meanwhile; in
-- `tstats rollup` it blocks). SET LOCAL lasts for the transaction only, so a
-- reconnected session needs nothing redone.
local function pg_bound(c)
  local s = tonumber(section("postgres").statement_timeout) or 10
  if s <= 0 then return true end
  local ms = math.max(1, math.floor(s * 1000 + 0.5))
  local ok, err = c:exec(("SET LOCAL statement_timeout = %d"):format(ms))
  if not ok then return nil, err end
  return c:exec(("SET LOCAL lock_timeout = %d"):format(ms))
end

-- Delete-then-insert in ONE transaction: idempotent on Traffic Ops' schema,
-- which has no unique key we could upsert on (ATC.md 4).
local function pg_write(day, rows)
  local c, err = pg_conn()
  if not c then return nil, err end
  local ok
  ok, err = c:exec("BEGIN")
  if not ok then return nil, err end
  local function abort(e)
    c:exec("ROLLBACK")
    return nil, e
  end
  ok, err = pg_bound(c)
  if not ok then return abort(err) end
  ok, err = c:query(LOCK_SQL)
  if not ok then return abort(err) end
  for _, r in ipairs(rows) do
    ok, err = c:exec(DELETE_SQL, day.date, r.cdn, r.deliveryservice, r.stat_name)
    if not ok then return abort(err) end
    ok, err = c:exec(INSERT_SQL, r.cdn, r.deliveryservice, r.stat_name, r.value, day.date)
    if not ok then return abort(err) end
  end
  ok, err = c:exec("COMMIT")
  if not ok then return nil, err end
  return true
end

-- Newest stat_date of any of the stats, as a day start; false when none.
local function pg_last(stats)
  local c, err = pg_conn()
  if not c then return nil, err end
  local ph = {}
  for i = 1, #stats do ph[i] = "$" .. i end
  local rows, ok
  ok, err = c:exec("BEGIN")
  if not ok then return nil, err end
  ok, err = pg_bound(c)
  if ok then
    rows, err = c:query("SELECT max(stat_date)::text AS d FROM stats_summary WHERE stat_name IN ("
      .. table.concat(ph, ", ") .. ")", table.unpack(stats))
  end
  if not rows then
    c:exec("ROLLBACK")
    return nil, err
  end
  ok, err = c:exec("COMMIT")
  if not ok then return nil, err end
  local d = rows[1] and rows[1].d
  if d == nil then return false end
  local s
  s, err = summary.parse_date(d)
  if not s then return nil, "stats_summary: " .. err end
  return s
end

local function to_client()
  if state.to then return state.to end
  local t = section("traffic_ops")
  local ok, c = pcall(function()
    return require("to").new { url = t.url, user = t.user, password = t.password, insecure = t.insecure,
                               timeout = t.timeout, ca_file = t.ca_file, ca_path = t.ca_path,
                               client_cert = t.client_cert, client_key = t.client_key }
  end)
  if not ok then return nil, "summary sink api: " .. tostring(c) end
  state.to = c
  return c
end

-- The TO API cannot delete, so a row is posted only when TO has none for that
-- date/cdn/ds/stat yet; a recomputed value cannot replace an old one this way.
local function api_write(day, rows)
  local c, err = to_client()
  if not c then return nil, err end
  for _, r in ipairs(rows) do
    local existing
    existing, err = c:summaries { statName = r.stat_name, cdnName = r.cdn, deliveryServiceName = r.deliveryservice }
    if not existing then return nil, err end
    local found
    for _, e in ipairs(existing) do
      if type(e) == "table" and type(e.statDate) == "string" and e.statDate:sub(1, 10) == day.date then
        found = e
        break
      end
    end
    if found then
      if found.statValue ~= r.value then
        log("warn", ("summary sink api: %s %s %s %s already in Traffic Ops with %s, not replaced by %s"
          .. " (the API cannot delete; use the pg sink to recompute)"):format(day.date, r.cdn,
          r.deliveryservice, r.stat_name, tostring(found.statValue), summary.num(r.value)))
      end
    else
      local ok
      ok, err = c:post_summary { statName = r.stat_name, statValue = r.value, cdnName = r.cdn,
                                 deliveryServiceName = r.deliveryservice, statDate = day.date }
      if not ok then return nil, err end
    end
  end
  return true
end

local function daily_db()
  local cfg = config()
  local db = (type(cfg.databases) == "table" and cfg.databases.daily) or "daily_stats"
  local rp = (type(cfg.retention) == "table" and cfg.retention.daily) or "indefinite"
  return db, rp
end

local function influx_write(rows)
  local db, rp = daily_db()
  local points = {}
  for i, r in ipairs(rows) do
    points[i] = { measurement = r.stat_name, tags = { cdn = r.cdn, deliveryservice = r.deliveryservice },
                  fields = { value = r.value }, time = r.time }
  end
  local n, err = T().influx.write { db = db, rp = rp, precision = "s", points = points, sync = true }
  if not n then return nil, "InfluxDB " .. db .. ": " .. tostring(err) end
  if n ~= #points then return nil, ("InfluxDB %s: %d of %d points accepted"):format(db, n, #points) end
  return true
end

local function influx_last(stats)
  local db, rp = daily_db()
  local from = {}
  for i, s in ipairs(stats) do from[i] = summary.ident(rp) .. "." .. summary.ident(s) end
  local series, err = T().influx.query("SELECT last(value) FROM " .. table.concat(from, ", "),
    { db = db, epoch = "s" })
  if not series then return nil, "InfluxDB " .. db .. ": " .. tostring(err) end
  local best = false
  for _, s in ipairs(series) do
    for _, v in ipairs(s.values or {}) do
      local t = math.tointeger(v[1])
      if t and (not best or t > best) then best = t end
    end
  end
  return best and summary.day_start(best) or false
end

-- Last day recorded for a rollup, read from the store of record: stats_summary
-- when the pg sink is on, else daily_stats. false when nothing is recorded.
function summary.last_recorded(mod)
  local set, err = sinks()
  if not set then return nil, err end
  if set.pg then return pg_last(mod.stats) end
  return influx_last(mod.stats)
end

-- The store of record is written last, so a day it shows as done had every
-- other write succeed (a failure anywhere leaves the day pending).
local function write_all(day, rows)
  local set, err = sinks()
  if not set then return nil, err end
  local steps = {}
  if set.pg then
    steps = { { "InfluxDB", function() return influx_write(rows) end } }
    if set.api then steps[#steps + 1] = { "Traffic Ops API", function() return api_write(day, rows) end } end
    steps[#steps + 1] = { "PostgreSQL", function() return pg_write(day, rows) end }
  else
    if set.api then steps[#steps + 1] = { "Traffic Ops API", function() return api_write(day, rows) end } end
    steps[#steps + 1] = { "InfluxDB", function() return influx_write(rows) end }
  end
  for _, st in ipairs(steps) do
    local ok, e = st[2]()
    if not ok then
      count("summary_sink_errors")
      return nil, st[1] .. ": " .. tostring(e)
    end
  end
  return true
end

---------------------------------------------------------------------------
-- Drivers.

-- Computes and writes one day. opts: rollups (names), cdns (list or string), dry_run (print, write nothing).
-- Returns the number of rows written, or nil, err (the day stays pending).
function summary.run_day(day, opts)
  opts = opts or {}
  day = as_day(day)
  local cdns = list_of(opts.cdns or opts.cdn, nil)
  local names = list_of(opts.rollups or day.rollups, nil) or summary.rollup_names()
  local ctx = context(cdns)
  local rows = {}
  for _, name in ipairs(names) do
    local mod, err = summary.load_rollup(name)
    if not mod then return nil, err end
    local ok, r, rerr = pcall(mod.compute, day, ctx)
    if not ok then return nil, ("rollup %s %s: %s"):format(name, day.date, tostring(r)) end
    if type(r) ~= "table" then
      return nil, ("rollup %s %s: %s"):format(name, day.date, tostring(rerr or "compute returned no rows table"))
    end
    for _, row in ipairs(clean_rows(mod, name, day, r)) do rows[#rows + 1] = row end
  end
  for _, r in ipairs(rows) do log_row(r) end
  if opts.dry_run then
    -- `tstats rollup --dry-run`: the rows, nothing written, nothing recorded as done
    for _, r in ipairs(rows) do
      print(("%s\t%s\t%s\t%s\t%s"):format(day.date, r.cdn, r.deliveryservice, r.stat_name, summary.num(r.value)))
    end
    return #rows
  end
  if #rows > 0 then
    local ok, err = write_all(day, rows)
    if not ok then return nil, ("%s: %s"):format(day.date, err) end
    -- every CDN with rows in the store now: /metrics' last success per CDN
    local stored = {}
    for _, r in ipairs(rows) do stored[r.cdn] = true end
    local now = T().now
    require("summary_state").record(stored, type(now) == "function" and now() or os.time())
  else
    log("info", ("daily summary %s: no data (rollups %s)"):format(day.date, table.concat(names, ", ")))
  end
  if not cdns then
    for _, name in ipairs(names) do
      state.done[name] = state.done[name] or {}
      state.done[name][day.start] = true
    end
  end
  count("summary_rows_written", #rows)
  return #rows
end

-- Start of the newest UTC day that closed at least summary.grace seconds
-- before now_s (the continuous queries need that long to finish it); and the grace.
function summary.newest_closed(now_s)
  local grace = math.tointeger(section("summary").grace) or 600
  return summary.day_start(now_s - grace) - DAY, grace
end

-- Days to compute at now_s: every whole UTC day closed at least summary.grace
-- seconds ago and newer than the last day recorded in the store, at most
-- summary.max_catchup_days of them; just yesterday when nothing is recorded.
-- Returns an ascending array of { start=, stop=, date=, rollups={names} }, or nil, err.
function summary.pending_days(now_s, opts)
  opts = opts or {}
  local maxc = math.tointeger(section("summary").max_catchup_days) or 31
  if maxc < 1 then maxc = 1 end
  local newest = summary.newest_closed(now_s)
  local oldest = newest - (maxc - 1) * DAY
  local by_day = {}
  for _, name in ipairs(summary.rollup_names(opts)) do
    local mod, err = summary.load_rollup(name)
    if not mod then return nil, err end
    local last
    last, err = summary.last_recorded(mod)
    if last == nil then return nil, ("rollup %s: last recorded day: %s"):format(name, tostring(err)) end
    local first = last and last + DAY or newest
    if first < oldest then
      log("warn", ("rollup %s: last recorded day %s is more than %d days old; computing from %s"
        .. " (use `tstats rollup --from --to` for older days)"):format(name, summary.date(last), maxc,
        summary.date(oldest)))
      first = oldest
    end
    local done = state.done[name] or {}
    for d = first, newest, DAY do
      if not done[d] then
        by_day[d] = by_day[d] or {}
        table.insert(by_day[d], name)
      end
    end
  end
  local out = {}
  for d, names in pairs(by_day) do
    local day = summary.day(d)
    day.rollups = names
    out[#out + 1] = day
  end
  table.sort(out, function(a, b) return a.start < b.start end)
  return out
end

-- The daemon's entry point (every daily_summary_interval): runs pending days
-- oldest first and stops at the first failure, which the next tick retries.
-- Returns the number of days done, or nil, err.
function summary.tick(now_s)
  if section("summary").enabled == false then return 0 end
  now_s = now_s or T().now()
  local days, err = summary.pending_days(now_s)
  if not days then
    log("error", "daily summary: " .. tostring(err) .. " (retrying next time)")
    count("summary_errors")
    return nil, err
  end
  for i, day in ipairs(days) do
    local ok, derr = summary.run_day(day)
    if not ok then
      log("error", ("daily summary for %s failed, will retry: %s"):format(day.date, tostring(derr)))
      count("summary_errors")
      return nil, derr, i - 1
    end
    log("info", ("daily summary for %s done (%d rows)"):format(day.date, ok))
  end
  return #days
end

-- Recomputes every day from from_date to to_date (inclusive, YYYY-MM-DD), for
-- `tstats rollup`. opts: cdns (or cdn), rollups (or rollup): a name or a list;
-- progress(i, n, day); now (unix s).
-- Days not yet closed (plus grace) are left out: a partial day in the store
-- would stop the daemon from computing it when it closes.
-- Returns days, rows; or nil, err, days_done.
function summary.range(from_date, to_date, opts)
  opts = opts or {}
  local s, err = summary.parse_date(from_date)
  if not s then return nil, "--from: " .. err end
  local e
  e, err = summary.parse_date(to_date)
  if not e then return nil, "--to: " .. err end
  if e < s then return nil, ("--to %s is before --from %s"):format(to_date, from_date) end
  local newest, grace = summary.newest_closed(opts.now or T().now())
  if s > newest then return nil, ("no closed day in %s..%s (newest closed day is %s)"):format(from_date, to_date,
    summary.date(newest)) end
  if e > newest then
    log("warn", ("days after %s are not closed yet (grace %ds): left out"):format(summary.date(newest), grace))
    e = newest
  end
  local n = (e - s) // DAY + 1
  local total = 0
  for i = 1, n do
    local day = summary.day(s + (i - 1) * DAY)
    local rows, derr = summary.run_day(day, { cdns = opts.cdns or opts.cdn, rollups = opts.rollups or opts.rollup,
      dry_run = opts.dry_run })
    if not rows then return nil, derr, i - 1 end
    total = total + rows
    if opts.progress then opts.progress(i, n, day) end
  end
  return n, total
end

return summary
