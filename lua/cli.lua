-- Subcommands that are Lua functions (Lua side): options, setup-influx, rollup,
-- backfill-cq, script, config. lua/commands.lua parses the command line and
-- calls them as fn(opts, args, ctx) -> exit code (0 ok, 1 failure, 2 usage).
local tstats = require "tstats"

local C = {}

local function date_to_s(d)
  local y, m, dd = tostring(d or ""):match("^(%d%d%d%d)-(%d%d)-(%d%d)")
  if not y then error("dates are YYYY-MM-DD, got '" .. tostring(d) .. "'", 0) end
  return require("tstats.civil").days_from_civil(tonumber(y), tonumber(m), tonumber(dd)) * 86400
end
C.date_to_s = date_to_s

local function eprint(s) io.stderr:write(s, "\n") end

function C.options()
  print(require("options").markdown())
  return 0
end

-- ---- progress ------------------------------------------------------------------
-- On a terminal: one titled bar per phase at the bottom of the log stream
-- (log lines go above it), redrawn whole; left as a finished line at the end.
-- Off a terminal: a plain line at the start, every tenth and at the end.
function C.progress(title, tty)
  local last_decile
  return function(i, n, item)
    local label = type(item) == "table" and (item.date or item.label) or tostring(item or "")
    if tty and tstats._status then
      local width = 30
      local done = n > 0 and math.floor(width * i / n) or width
      local line = ("%s [%s%s] %d/%d %s"):format(title, ("#"):rep(done), ("."):rep(width - done), i, n, label)
      if i >= n then
        tstats._status()
        io.stderr:write(line, "\n")
        io.stderr:flush()
      else
        tstats._status(line)
      end
    else
      local decile = n > 0 and (10 * i) // n or 10
      if i == 1 or i >= n or decile ~= last_decile then
        io.stderr:write(("%s %d/%d %s\n"):format(title, i, n, label))
        io.stderr:flush()
      end
      last_decile = decile
    end
  end
end

-- ---- setup-influx ----------------------------------------------------------------

-- InfluxDB durations ("26h0m0s", "30d", "INF", "0s") in seconds (0 = infinite).
local function dur_s(s)
  s = tostring(s or "")
  if s == "INF" or s == "inf" then return 0 end
  local total, any = 0, false
  local units = { w = 604800, d = 86400, h = 3600, m = 60, s = 1 }
  for num, u in s:gmatch("(%d+)([wdhms])") do total = total + tonumber(num) * units[u]; any = true end
  return any and total or nil
end
C.dur_s = dur_s

local function norm_cq(q)
  return (tostring(q):gsub('"', ""):gsub("%s+", ""):lower())
end

-- One InfluxDB server: q(stmt) -> decoded JSON results, or nil, err.
local function influx_at(url)
  local cfg = tstats.config.influxdb or {}
  local base = url:gsub("/+$", "")
  local function req(path, q, method)
    local r, err = tstats.http.request {
      url = base .. path .. (q and ("?q=" .. tstats.http.urlencode(q)) or ""), method = method or "GET",
      user = cfg.user, password = cfg.password, insecure = cfg.insecure, timeout = cfg.timeout or 10, connect_timeout = 3,
    }
    if not r then return nil, err end
    return r
  end
  local S = {}
  function S.ping()
    local r, err = req("/ping")
    if not r then return nil, err end
    if r.status ~= 204 and r.status ~= 200 then return nil, ("HTTP %d on /ping"):format(r.status) end
    return true
  end
  function S.q(stmt, method)
    local r, err = req("/query", stmt, method)
    if not r then return nil, err end
    local ok, doc = pcall(tstats.json.decode, r.body or "")
    if not ok or type(doc) ~= "table" then return nil, ("HTTP %d: %s"):format(r.status, tostring(r.body):sub(1, 200)) end
    if doc.error then return nil, doc.error end
    local res = doc.results and doc.results[1] or {}
    if res.error then return nil, res.error end
    if r.status >= 300 then return nil, ("HTTP %d"):format(r.status) end
    return res
  end
  function S.rows(stmt)
    local res, err = S.q(stmt)
    if not res then return nil, err end
    local out = {}
    for _, s in ipairs(res.series or {}) do
      for _, v in ipairs(s.values or {}) do
        local row = { _series = s.name }
        for i, c in ipairs(s.columns or {}) do row[c] = v[i] end
        out[#out + 1] = row
      end
    end
    return out
  end
  return S
end
C.influx_at = influx_at

-- The objects of ATC's schema, in order: { kind=, db=, name=, create=, rp= | cq= }.
local function schema_objects(replication)
  local cfg = tstats.config
  local schema = require "schema"
  local rename = { cache_stats = cfg.databases.cache, deliveryservice_stats = cfg.databases.ds, daily_stats = cfg.databases.daily }
  local out = {}
  for _, db in ipairs(schema.databases) do
    local name = rename[db.name] or db.name
    out[#out + 1] = { kind = "database", db = name, name = name, create = ("CREATE DATABASE %s"):format(name) }
    for _, rp in ipairs(db.rps) do
      out[#out + 1] = { kind = "retention policy", db = name, name = rp.name, rp = rp, replication = replication,
        create = ("CREATE RETENTION POLICY %s ON %s DURATION %s REPLICATION %d%s"):format(rp.name, name, rp.duration,
          replication, rp.default and " DEFAULT" or "") }
    end
    for _, cq in ipairs(db.cqs) do
      local stmt = cq.query
      if name ~= db.name then stmt = stmt:gsub(db.name, name) end
      out[#out + 1] = { kind = "continuous query", db = name, name = cq.name, create = stmt }
    end
  end
  return out
end
C.schema_objects = schema_objects

-- Sets up one server: returns counts { created=, unchanged=, differs=, failed= } or nil, err (unreachable).
local function setup_one(url, objs)
  local S = influx_at(url)
  local ok, err = S.ping()
  if not ok then return nil, err end
  local n = { created = 0, unchanged = 0, differs = 0, failed = 0 }
  local dbs, rps, cqs = {}, {}, {}
  local rows, qerr = S.rows("SHOW DATABASES")
  if not rows then return nil, "SHOW DATABASES: " .. tostring(qerr) end
  for _, r in ipairs(rows) do dbs[r.name] = true end
  local function load_db(db)
    if rps[db] or not dbs[db] then return end
    rps[db] = {}
    for _, r in ipairs(S.rows(("SHOW RETENTION POLICIES ON %s"):format(db)) or {}) do rps[db][r.name] = r end
  end
  for _, r in ipairs(S.rows("SHOW CONTINUOUS QUERIES") or {}) do
    cqs[(r._series or "") .. "/" .. tostring(r.name)] = r.query
  end
  local function line(state, o, extra)
    print(("%-9s %s %s%s%s"):format(state, o.kind, o.kind == "database" and "" or (o.db .. "."), o.name,
      extra and ("  " .. extra) or ""))
  end
  local function exec(o)
    local res, e = S.q(o.create, "POST")
    if not res then
      n.failed = n.failed + 1
      line("FAILED", o, tostring(e))
      return false
    end
    return true
  end
  for _, o in ipairs(objs) do
    if o.kind == "database" then
      if dbs[o.name] then n.unchanged = n.unchanged + 1; line("unchanged", o)
      elseif exec(o) then dbs[o.name] = true; n.created = n.created + 1; line("created", o) end
    elseif o.kind == "retention policy" then
      load_db(o.db)
      local have = rps[o.db] and rps[o.db][o.name]
      if not have then
        if exec(o) then n.created = n.created + 1; line("created", o) end
      else
        local want_d = dur_s(o.rp.duration)
        local diffs = {}
        if dur_s(have.duration) ~= want_d then diffs[#diffs + 1] = ("duration %s, ATC's %s"):format(have.duration, o.rp.duration) end
        if math.tointeger(have.replicaN) ~= o.replication then
          diffs[#diffs + 1] = ("replication %s, wanted %d"):format(tostring(have.replicaN), o.replication)
        end
        if (have.default == true) ~= (o.rp.default == true) then
          diffs[#diffs + 1] = o.rp.default and "not the default" or "is the default"
        end
        if #diffs == 0 then n.unchanged = n.unchanged + 1; line("unchanged", o)
        else
          n.differs = n.differs + 1
          line("differs", o, table.concat(diffs, "; ") .. ("; to match run: ALTER RETENTION POLICY %s ON %s DURATION %s REPLICATION %d%s")
            :format(o.name, o.db, o.rp.duration, o.replication, o.rp.default and " DEFAULT" or ""))
        end
      end
    else
      local have = cqs[o.db .. "/" .. o.name]
      if not have then
        if exec(o) then n.created = n.created + 1; line("created", o) end
      elseif norm_cq(have) == norm_cq(o.create) then
        n.unchanged = n.unchanged + 1; line("unchanged", o)
      else
        n.differs = n.differs + 1
        line("differs", o, ("the stored query is not ATC's; to match run: DROP CONTINUOUS QUERY %s ON %s; %s"):format(o.name, o.db, o.create))
      end
    end
  end
  return n
end

function C.setup_influx(opts)
  local objs = schema_objects(opts.replication or require("schema").replication_default)
  if opts.print or opts["dry-run"] then
    for _, o in ipairs(objs) do print(o.create .. ";") end
    return 0
  end
  local urls = opts.url or (tstats.config.influxdb or {}).urls or {}
  if #urls == 0 then eprint("tstats setup-influx: no InfluxDB URL (influxdb.urls or --url)"); return 2 end
  local V = require "validate"
  for _, u in ipairs(urls) do
    local p = V.url_problem(u)
    if p then eprint("tstats setup-influx: --url " .. p); return 2 end
  end
  local rc = 0
  for _, u in ipairs(urls) do
    local shown = u:gsub("//[^/@]*@", "//")
    print(("# %s"):format(shown))
    local n, err = setup_one(u, objs)
    if not n then
      eprint(("tstats setup-influx: %s: cannot reach InfluxDB: %s"):format(shown, tostring(err)))
      print(("%s: NOT set up (unreachable)"):format(shown))
      rc = 1
    else
      print(("%s: %d created, %d unchanged, %d differ, %d failed"):format(shown, n.created, n.unchanged, n.differs, n.failed))
      if n.failed > 0 or n.differs > 0 then rc = 1 end
    end
  end
  return rc
end

-- ---- rollup / backfill -------------------------------------------------------------

local function check_rollups(names)
  local V = require "validate"
  for _, r in ipairs(names or {}) do
    if not r:match("^[%w_]+$") or not V.module_exists("rollups." .. r, tstats.config.script_dir) then
      eprint(("tstats rollup: unknown rollup '%s' (available: %s)"):format(r, table.concat(V.rollups_available(tstats.config.script_dir), ", ")))
      return false
    end
  end
  return true
end

-- CDNs that have data in the cache stats database, or nil, err.
local function cdns_with_data()
  local db = tstats.config.databases.cache
  local series, err = tstats.influx.query('SHOW TAG VALUES WITH KEY = "cdn"', { db = db })
  if not series then return nil, err end
  local out, seen = {}, {}
  for _, s in ipairs(series) do
    for _, v in ipairs(s.values or {}) do
      if not seen[v[2]] then seen[v[2]] = true; out[#out + 1] = v[2] end
    end
  end
  table.sort(out)
  return out
end

function C.rollup(opts, _, ctx)
  if opts.to < opts.from then eprint(("tstats rollup: --to %s is before --from %s"):format(opts.to, opts.from)); return 2 end
  if not check_rollups(opts.rollup) then return 2 end
  if opts.cdn then
    local have, err = cdns_with_data()
    if not have then eprint("tstats rollup: cannot list the CDNs in InfluxDB: " .. tostring(err)); return 1 end
    local set = {}
    for _, c in ipairs(have) do set[c] = true end
    for _, c in ipairs(opts.cdn) do
      if not set[c] then
        eprint(("tstats rollup: no data for CDN '%s' in %s (CDNs with data: %s)"):format(c, tstats.config.databases.cache,
          #have > 0 and table.concat(have, ", ") or "none"))
        return 1
      end
    end
  end
  local summary = require "summary"
  local days, rows = summary.range(opts.from, opts.to, {
    cdns = opts.cdn, rollups = opts.rollup, dry_run = opts["dry-run"],
    progress = not opts["dry-run"] and C.progress("daily rollups", ctx.tty_err) or nil,
  })
  if not days then tstats.error("rollup failed: " .. tostring(rows)); return 1 end
  print(("rollup: %d days, %d rows %s"):format(days, rows, opts["dry-run"] and "computed (dry run: nothing written)" or "written"))
  if rows == 0 then
    eprint(("tstats rollup: nothing written: no data in %s for %s..%s"):format(tstats.config.databases.cache, opts.from, opts.to))
    return 1
  end
  return 0
end

-- Oldest time (unix s) the raw data the CQs read still exists, and the reason, or nil.
local function raw_horizon()
  local cfg = tstats.config
  local oldest, why
  for _, pair in ipairs({ { cfg.databases.cache, cfg.retention.cache }, { cfg.databases.ds, cfg.retention.ds } }) do
    local rows = tstats.influx.rows(("SHOW RETENTION POLICIES ON %s"):format(pair[1]))
    for _, r in ipairs(rows or {}) do
      if r.name == pair[2] then
        local d = dur_s(r.duration)
        if d and d > 0 then
          local h = tstats.now() - d
          if not oldest or h > oldest then oldest, why = h, ("%s.%s keeps %s"):format(pair[1], pair[2], r.duration) end
        end
      end
    end
  end
  return oldest, why
end

function C.backfill_cq(opts, _, ctx)
  local backfill = require "backfill"
  local lo = backfill.parse_when(opts.from, false)
  local hi = backfill.parse_when(opts.to, true)
  if lo and hi and hi <= lo then eprint("tstats backfill-cq: --to must be after --from"); return 2 end
  local horizon, why = raw_horizon()
  local summary = require "summary"
  if horizon and hi and hi <= horizon then
    eprint(("tstats backfill-cq: the raw data of %s..%s has expired (%s; nothing older than %s is left): nothing to backfill")
      :format(opts.from, opts.to, why, summary.rfc3339(math.floor(horizon))))
    return 1
  end
  if horizon and lo and lo < horizon then
    tstats.warn(("raw data older than %s has expired (%s): the window before it yields nothing"):format(
      summary.rfc3339(math.floor(horizon)), why))
  end
  local r, err = backfill.run(opts.from, opts.to, {
    chunk_hours = opts.chunk, rollup = not opts["no-rollup"], dry_run = opts["dry-run"],
    progress = not opts["dry-run"] and C.progress("continuous queries", ctx.tty_err) or nil,
    rollup_progress = C.progress("daily rollups", ctx.tty_err),
  })
  if not r then tstats.error("backfill-cq failed: " .. tostring(err)); return 1 end
  if opts["dry-run"] then
    print(("-- backfill-cq --dry-run: %d queries printed, nothing run"):format(r.queries))
    return 0
  end
  print(("backfill-cq: %d queries, %d points written, %d days rolled up"):format(r.queries, r.written, r.days))
  return 0
end

-- ---- script / config -----------------------------------------------------------------

local function builtin_scripts()
  return tstats._embedded_scripts and tstats._embedded_scripts() or {}
end

function C.script(opts, args)
  if opts.list then
    for _, n in ipairs(builtin_scripts()) do
      local src = tstats._embedded_script(n) or ""
      local first = (src:match("^%-%-%s*([^\n]*)") or ""):gsub("^[%w_]+%.lua:%s*", "")
      print(("%-24s %s"):format(n, first))
    end
    return 0
  end
  local name = args[1]
  if not name then io.stderr:write(require("commands").usage(require("commands").by_name.script), "\n"); return 2 end
  local chunk, err
  local f = io.open(name, "r")
  if f then
    f:close()
    chunk, err = loadfile(name, "t")
  else
    local base = name:match("^([%w_%-]+)%.lua$") or name
    local src = base:match("^[%w_%-]+$") and tstats._embedded_script and tstats._embedded_script(base)
    if not src then
      eprint(("tstats script: no file '%s' and no built-in script of that name (built in: %s)"):format(name,
        table.concat(builtin_scripts(), ", ")))
      return 2
    end
    chunk, err = load(src, "@[tstats]/lua/scripts/" .. base .. ".lua", "t")
  end
  if not chunk then error(err, 0) end
  _G.arg = { [0] = name, table.unpack(args, 2) }
  local rc = chunk(table.unpack(args, 2))
  if rc == nil or rc == true then return 0 end
  if rc == false then return 1 end
  return math.tointeger(rc) or 1
end

-- A commented starting configuration from the option table: required keys
-- set (placeholders), secrets from the environment, the rest commented out
-- at their defaults.
function C.starting_config()
  local O = require "options"
  local out = {
    "-- tstats configuration (Lua): a table. Generated by `tstats config --print-default`.",
    "-- Every key with its default; uncomment to change. env(\"NAME\", default) reads the environment.",
    "-- Validate with `tstats --config FILE check` (add --connect to contact the servers).",
    "return {",
  }
  local placeholders = {
    ["traffic_ops.url"] = '"https://traffic-ops.example.net"',
    ["influxdb.urls"] = '{ "http://127.0.0.1:8086" }',
    ["traffic_ops.password"] = 'env("TO_PASSWORD")',
    ["influxdb.password"] = 'env("INFLUX_PASSWORD")',
    ["postgres.conninfo"] = 'env("TSTATS_PG_CONNINFO")',
    ["summary.sinks"] = '{}',
  }
  local open_sec
  local function close_sec() if open_sec then out[#out + 1] = "  },"; open_sec = nil end end
  for _, o in ipairs(O.list) do
    local d = O.by_key[o[1]]
    local sec, name = d.key:match("^([^.]+)%.(.+)$")
    if sec ~= open_sec then
      close_sec()
      if sec then out[#out + 1] = "  " .. sec .. " = {"; open_sec = sec end
    end
    local ind = sec and "    " or "  "
    local k = name or d.key
    out[#out + 1] = ind .. "-- " .. d.help:gsub("\n", " ") .. " (" .. d.type .. ")"
    local ph = placeholders[d.key]
    if ph then
      out[#out + 1] = ("%s%s = %s,"):format(ind, k, ph)
    else
      out[#out + 1] = ("%s-- %s = %s,"):format(ind, k, d.default == nil and "nil" or O.show_default(d))
    end
  end
  close_sec()
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

function C.config_cmd(opts)
  if opts["print-default"] then io.stdout:write(C.starting_config()) end
  return 0
end

return C
