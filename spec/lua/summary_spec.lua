-- summary_spec.lua: pure busted specs (Lua test side) for lua/summary.lua and the stock
-- rollup lua/rollups/daily.lua, with a stand-in `tstats`: an in-memory InfluxDB that
-- evaluates the rollup's max()/mean() queries over raw points, and an in-memory
-- stats_summary behind a fake tstats.pg. Real servers: spec/runtime/rollup_spec.lua.
local DAY = 86400

-- Unix seconds of a UTC date/time, computed independently of summary.lua
-- (os.time in UTC via the '!' trick is not portable, so count days by hand).
local function utc(y, m, d, hh, mm, ss)
  local days = 0
  for yy = 1970, y - 1 do
    days = days + ((yy % 4 == 0 and (yy % 100 ~= 0 or yy % 400 == 0)) and 366 or 365)
  end
  local mdays = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then mdays[2] = 29 end
  for mm2 = 1, m - 1 do days = days + mdays[mm2] end
  days = days + d - 1
  return days * DAY + (hh or 0) * 3600 + (mm or 0) * 60 + (ss or 0)
end

local function parse_rfc(s)
  local y, m, d, hh, mi, ss = s:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)Z$")
  return utc(tonumber(y), tonumber(m), tonumber(d), tonumber(hh), tonumber(mi), tonumber(ss))
end

---------------------------------------------------------------------------
-- Stand-in InfluxDB: points[db][measurement] = { {t=, v=, tags={}} }.
local influx_points, influx_writes, influx_queries, influx_fail

local function where_ok(q, p)
  for op, ts in q:gmatch("time%s*([<>]=?)%s*'([^']+)'") do
    local t = parse_rfc(ts)
    if op == ">=" and not (p.t >= t) then return false end
    if op == ">" and not (p.t > t) then return false end
    if op == "<" and not (p.t < t) then return false end
    if op == "<=" and not (p.t <= t) then return false end
  end
  local cdnf = q:match("AND %((cdn = .-)%)")
  if cdnf then
    local ok = false
    for c in cdnf:gmatch("cdn = '([^']*)'") do if p.tags.cdn == c then ok = true end end
    if not ok then return false end
  end
  return true
end

local function fake_query(q, opts)
  influx_queries[#influx_queries + 1] = { q = q, db = opts and opts.db, epoch = opts and opts.epoch }
  if influx_fail then return nil, influx_fail end
  local db = opts.db
  local meas = q:match('FROM [^%s]-"([^"]+)" WHERE') or q:match('FROM .-%."([^"]+)"$')
  if q:match("^SELECT last%(value%)") then
    local out = {}
    for rp_meas in q:gmatch('"[^"]+"%."([^"]+)"') do
      local best
      for _, p in ipairs((influx_points[db] or {})[rp_meas] or {}) do
        if not best or p.t > best then best = p.t end
      end
      if best then out[#out + 1] = { name = rp_meas, columns = { "time", "last" }, values = { { best, 1.0 } } } end
    end
    return out
  end
  local pts = (influx_points[db] or {})[meas] or {}
  local by = {}
  local order = {}
  for _, p in ipairs(pts) do
    if where_ok(q, p) then
      local c = p.tags.cdn
      if not by[c] then by[c] = {}; order[#order + 1] = c end
      table.insert(by[c], p)
    end
  end
  table.sort(order)
  local out = {}
  local lo = parse_rfc(q:match("time >= '([^']+)'"))
  local hi = parse_rfc(q:match("time < '([^']+)'"))
  for _, c in ipairs(order) do
    local ps = by[c]
    if q:match("max%(value%)") then
      local best
      for _, p in ipairs(ps) do if not best or p.v > best.v then best = p end end
      out[#out + 1] = { name = meas, tags = { cdn = c }, columns = { "time", "max" }, values = { { best.t, best.v } } }
    elseif q:match("mean%(value%)") and q:match("GROUP BY time%(1m%)") then
      -- Like InfluxDB: one row per minute of the window, null (here: a sentinel
      -- table, as cjson.null is not a number) where the bucket is empty.
      local values = {}
      for b = lo, hi - 60, 60 do
        local s, n = 0.0, 0
        for _, p in ipairs(ps) do if p.t >= b and p.t < b + 60 then s = s + p.v; n = n + 1 end end
        values[#values + 1] = { b, n > 0 and s / n or { null = true } }
      end
      out[#out + 1] = { name = meas, tags = { cdn = c }, columns = { "time", "mean" }, values = values }
    else
      error("stand-in cannot evaluate " .. q)
    end
  end
  return out
end

local function fake_write(t)
  influx_writes[#influx_writes + 1] = t
  if influx_fail then return nil, influx_fail end
  for _, p in ipairs(t.points) do
    influx_points[t.db] = influx_points[t.db] or {}
    local m = influx_points[t.db][p.measurement] or {}
    influx_points[t.db][p.measurement] = m
    -- InfluxDB semantics: same series + time replaces the point.
    local replaced
    for _, o in ipairs(m) do
      if o.t == p.time and o.tags.cdn == p.tags.cdn and o.tags.deliveryservice == p.tags.deliveryservice then
        o.v = p.fields.value
        replaced = true
      end
    end
    if not replaced then m[#m + 1] = { t = p.time, v = p.fields.value, tags = p.tags } end
  end
  return #t.points
end

---------------------------------------------------------------------------
-- Stand-in tstats.pg: an in-memory stats_summary with transactions.
local pg_table, pg_log, pg_fail_on, pg_connects, pg_connect_fail

local function new_conn()
  local c = { snapshot = nil }
  function c:exec(sql, ...)
    local args = table.pack(...)
    pg_log[#pg_log + 1] = { sql = sql, args = args }
    if pg_fail_on and sql:find(pg_fail_on, 1, true) then return nil, "pg: stand-in failure on " .. pg_fail_on end
    if sql == "BEGIN" then
      self.snapshot = {}
      for i, r in ipairs(pg_table) do self.snapshot[i] = r end
      return 0
    elseif sql == "COMMIT" then
      self.snapshot = nil
      return 0
    elseif sql == "ROLLBACK" then
      if self.snapshot then pg_table = self.snapshot end
      self.snapshot = nil
      return 0
    elseif sql:match("^SET LOCAL [%w_]+ = %d+$") then
      return 0      -- postgres.statement_timeout: a real server enforces it (spec/runtime/fault_pg_spec.lua)
    elseif sql:match("^DELETE FROM stats_summary") then
      local keep, n = {}, 0
      for _, r in ipairs(pg_table) do
        if r.stat_date == args[1] and r.cdn_name == args[2] and r.deliveryservice_name == args[3]
          and r.stat_name == args[4] then
          n = n + 1
        else
          keep[#keep + 1] = r
        end
      end
      pg_table = keep
      return n
    elseif sql:match("^INSERT INTO stats_summary") then
      assert(math.type(args[4]) == "float", "stat_value must be passed as a float")
      pg_table[#pg_table + 1] = { cdn_name = args[1], deliveryservice_name = args[2], stat_name = args[3],
                                  stat_value = args[4], stat_date = args[5] }
      return 1
    end
    error("stand-in pg cannot exec " .. sql)
  end
  function c:query(sql, ...)
    local args = table.pack(...)
    pg_log[#pg_log + 1] = { sql = sql, args = args }
    if pg_fail_on and sql:find(pg_fail_on, 1, true) then return nil, "pg: stand-in failure on " .. pg_fail_on end
    if sql:match("pg_advisory_xact_lock") then return { {} } end
    if sql:match("max%(stat_date%)") then
      local names = {}
      for i = 1, args.n do names[args[i]] = true end
      local best
      for _, r in ipairs(pg_table) do
        if names[r.stat_name] and r.stat_date and (not best or r.stat_date > best) then best = r.stat_date end
      end
      return { { d = best } }
    end
    error("stand-in pg cannot query " .. sql)
  end
  function c:close() end
  return c
end

---------------------------------------------------------------------------
local summary
local logs

local function setup_world(cfg)
  influx_points, influx_writes, influx_queries, influx_fail = {}, {}, {}, nil
  pg_table, pg_log, pg_fail_on, pg_connects, pg_connect_fail = {}, {}, nil, 0, nil
  logs = {}
  _G.tstats = {
    config = cfg or {
      databases = { cache = "cache_stats", daily = "daily_stats" },
      retention = { daily = "indefinite" },
      summary = { sinks = { "pg" }, rollups = { "daily" }, grace = 600, max_catchup_days = 31 },
      postgres = { conninfo = "postgresql://stand-in" },
    },
    influx = { query = fake_query, write = fake_write },
    pg = {
      connect = function()
        pg_connects = pg_connects + 1
        if pg_connect_fail then return nil, pg_connect_fail end
        return new_conn()
      end,
    },
    now = function() return utc(2026, 3, 10, 12, 0, 0) + 0.0 end,
    info = function(m) logs[#logs + 1] = "INFO " .. m end,
    warn = function(m) logs[#logs + 1] = "WARN " .. m end,
    error = function(m) logs[#logs + 1] = "ERROR " .. m end,
    count = function() end,
  }
  package.loaded.summary = nil
  package.loaded["rollups.daily"] = nil
  summary = require "summary"
  summary._reset()
end

local function record(date, stat)
  pg_table[#pg_table + 1] = { cdn_name = "cdn1", deliveryservice_name = "all", stat_name = stat or "daily_maxgbps",
                              stat_value = 1.0, stat_date = date }
end

local function dates(days)
  local out = {}
  for i, d in ipairs(days) do out[i] = d.date end
  return out
end

local function add_points(cdn, list)
  influx_points.cache_stats = influx_points.cache_stats or {}
  local m = influx_points.cache_stats["bandwidth.cdn.1min"] or {}
  influx_points.cache_stats["bandwidth.cdn.1min"] = m
  for _, p in ipairs(list) do m[#m + 1] = { t = p[1], v = p[2], tags = { cdn = cdn } } end
end

describe("summary date helpers", function()
  before_each(function() setup_world() end)

  it("parses and formats UTC dates without the local zone", function()
    assert.are.equal(utc(2026, 3, 1), summary.parse_date("2026-03-01"))
    assert.are.equal(utc(2024, 2, 29), summary.parse_date("2024-02-29"))
    assert.is_nil(summary.parse_date("2026-02-29"))
    assert.is_nil(summary.parse_date("2026-13-01"))
    assert.is_nil(summary.parse_date("2026-3-1"))
    assert.are.equal("2026-02-28", summary.date(utc(2026, 2, 28, 23, 59, 59)))
    assert.are.equal("2026-03-01T00:00:00Z", summary.rfc3339(utc(2026, 3, 1)))
    assert.are.equal("1969-12-31", summary.date(-1))
  end)

  it("quotes InfluxQL strings and identifiers", function()
    assert.are.equal([['it\'s \\ x']], summary.literal([[it's \ x]]))
    assert.are.equal([["a\"b"]], summary.ident('a"b'))
    assert.are.equal(" AND (cdn = 'a' OR cdn = 'b\\'')", summary.cdn_where({ "a", "b'" }))
  end)
end)

describe("summary.pending_days", function()
  before_each(function() setup_world() end)

  it("computes just yesterday when nothing is recorded yet", function()
    -- The 2nd of a month: ATC's zero-time day-of-month test would also run, but on
    -- the 1st it would not; check both.
    assert.are.same({ "2026-03-01" }, dates(summary.pending_days(utc(2026, 3, 2, 0, 20))))
    assert.are.same({ "2026-02-28" }, dates(summary.pending_days(utc(2026, 3, 1, 0, 20))))
  end)

  it("catches up every day since the last one recorded (daemon down for 3 days)", function()
    record("2026-03-06")
    local days = summary.pending_days(utc(2026, 3, 10, 6, 0))
    assert.are.same({ "2026-03-07", "2026-03-08", "2026-03-09" }, dates(days))
    assert.are.equal(utc(2026, 3, 7), days[1].start)
    assert.are.equal(utc(2026, 3, 8), days[1].stop)
    assert.are.same({ "daily" }, days[1].rollups)
  end)

  it("waits for the grace period after midnight", function()
    record("2026-03-08")
    assert.are.same({}, dates(summary.pending_days(utc(2026, 3, 10, 0, 9, 59))))
    assert.are.same({ "2026-03-09" }, dates(summary.pending_days(utc(2026, 3, 10, 0, 10, 0))))
    record("2026-03-09")
    assert.are.same({}, dates(summary.pending_days(utc(2026, 3, 10, 23, 59, 59))))
  end)

  it("crosses month and year boundaries in unix days", function()
    record("2026-02-27")
    assert.are.same({ "2026-02-28", "2026-03-01" }, dates(summary.pending_days(utc(2026, 3, 2, 1, 0))))
    pg_table = {}
    record("2025-12-30")
    assert.are.same({ "2025-12-31" }, dates(summary.pending_days(utc(2026, 1, 1, 0, 10))))
    pg_table = {}
    record("2024-02-28") -- leap year
    assert.are.same({ "2024-02-29", "2024-03-01" }, dates(summary.pending_days(utc(2024, 3, 2, 3, 0))))
  end)

  it("never compares days of the month (a gap of exactly one month is caught up)", function()
    record("2026-01-15")
    local days = summary.pending_days(utc(2026, 2, 15, 12, 0))
    -- 2026-01-16 .. 2026-02-14: 16 + 14 days (ATC: same day-of-month, nothing).
    assert.are.equal(30, #days)
    assert.are.equal("2026-01-16", days[1].date)
    assert.are.equal("2026-02-14", days[30].date)
  end)

  it("caps the catch-up at max_catchup_days, keeping the newest days", function()
    tstats.config.summary.max_catchup_days = 5
    record("2025-11-01")
    local days = summary.pending_days(utc(2026, 3, 10, 12, 0))
    assert.are.same({ "2026-03-05", "2026-03-06", "2026-03-07", "2026-03-08", "2026-03-09" }, dates(days))
  end)

  it("reads the last day from daily_stats when there is no pg sink", function()
    tstats.config.summary.sinks = {}
    influx_points.daily_stats = { daily_maxgbps = { { t = utc(2026, 3, 7, 17, 42), v = 1.0, tags = { cdn = "x" } } } }
    assert.are.same({ "2026-03-08", "2026-03-09" }, dates(summary.pending_days(utc(2026, 3, 10, 1, 0))))
    assert.are.equal(0, pg_connects)
    assert.truthy(influx_queries[1].q:find('"indefinite"."daily_maxgbps"', 1, true))
  end)

  it("returns nil, err when the store cannot be read", function()
    pg_connect_fail = "pg: connect: refused"
    local days, err = summary.pending_days(utc(2026, 3, 10, 1, 0))
    assert.is_nil(days)
    assert.truthy(err:find("refused", 1, true))
  end)
end)

describe("daily rollup math", function()
  before_each(function() setup_world() end)

  local D = utc(2026, 3, 5)

  local function series()
    -- cdn1: a point at exactly 00:00 (ATC's strict '>' drops it), a gap of
    -- empty minutes, a bucket with two samples, the last minute, and points
    -- just outside the day on both sides that must not count.
    add_points("cdn1", {
      { D - 60, 9e9 },                -- previous day 23:59
      { D, 1000000.0 },               -- 00:00:00, kbps
      { D + 60, 2500000.0 },          -- 00:01
      { D + 6 * 3600, 1000.0 },       -- 06:00:00 and 06:00:30: mean 2000
      { D + 6 * 3600 + 30, 3000.0 },
      { D + 12 * 3600, 4000000.0 },   -- 12:00 the maximum
      { D + DAY - 60, 500000.0 },     -- 23:59
      { D + DAY, 9e9 },               -- next day 00:00
    })
    -- cdn2: the maximum sits exactly at 00:00.
    add_points("cdn2", { { D, 7777777.0 }, { D + 3600, 1.5 } })
  end

  it("computes max Gbps with its time, and decimal TB from 1-minute means", function()
    series()
    local n = assert(summary.run_day("2026-03-05"))
    assert.are.equal(4, n)
    local got = {}
    for _, w in ipairs(influx_writes) do
      assert.are.equal("daily_stats", w.db)
      assert.are.equal("indefinite", w.rp)
      assert.are.equal("s", w.precision)
      assert.is_true(w.sync)
      for _, p in ipairs(w.points) do
        assert.are.equal("all", p.tags.deliveryservice)
        assert.are.equal("float", math.type(p.fields.value))
        got[p.measurement .. "/" .. p.tags.cdn] = { p.fields.value, p.time }
      end
    end
    -- By hand: 4,000,000 kbps = 4 Gbps at 12:00.
    assert.are.same({ 4.0, D + 12 * 3600 }, got["daily_maxgbps/cdn1"])
    -- kB = (1e6 + 2.5e6 + 2000 + 4e6 + 5e5) * 60 / 8 = 8,002,000 * 7.5 = 60,015,000 kB
    -- = 0.060015 TB, stamped at the day start.
    assert.are.same({ 0.060015, D }, got["daily_bytesserved/cdn1"])
    assert.are.same({ 7.777777, D }, got["daily_maxgbps/cdn2"])
    -- (7777777 + 1.5) * 7.5 kB = 58333338.75 kB summed bucket by bucket.
    assert.are.same({ (7777777.0 * 60 / 8 + 1.5 * 60 / 8) / 1e9, D }, got["daily_bytesserved/cdn2"])
    assert.are.equal(0.05833333875, got["daily_bytesserved/cdn2"][1])
  end)

  it("queries the configured cache database, monthly RP, [start, stop)", function()
    series()
    assert(summary.run_day("2026-03-05"))
    local q1 = influx_queries[1]
    assert.are.equal("cache_stats", q1.db)
    assert.are.equal("s", q1.epoch)
    assert.are.equal('SELECT max(value) FROM "cache_stats"."monthly"."bandwidth.cdn.1min" WHERE '
      .. "time >= '2026-03-05T00:00:00Z' AND time < '2026-03-06T00:00:00Z' GROUP BY cdn", q1.q)
    assert.truthy(influx_queries[2].q:find("GROUP BY time(1m), cdn", 1, true))
  end)

  it("logs the lines operators grep for", function()
    series()
    assert(summary.run_day("2026-03-05"))
    local all = table.concat(logs, "\n")
    assert.truthy(all:find("INFO max gbps for cdn cdn1 = 4\n", 1, true), all)
    assert.truthy(all:find("INFO TBytes served for cdn cdn1 = 0.060015", 1, true), all)
    assert.truthy(all:find("INFO max gbps for cdn cdn2 = 7.777777", 1, true), all)
  end)

  it("restricts to --cdn", function()
    series()
    assert.are.equal(2, summary.run_day("2026-03-05", { cdns = { "cdn2" } }))
    for _, r in ipairs(pg_table) do assert.are.equal("cdn2", r.cdn_name) end
    assert.are.equal(2, #pg_table)
  end)
end)

describe("summary sinks", function()
  before_each(function() setup_world() end)
  local D = utc(2026, 3, 5)

  it("writes stats_summary in one transaction, idempotently", function()
    add_points("cdn1", { { D, 1e6 } })
    assert(summary.run_day("2026-03-05"))
    assert(summary.run_day("2026-03-05"))
    assert.are.equal(2, #pg_table)
    local names = {}
    for _, r in ipairs(pg_table) do
      assert.are.equal("2026-03-05", r.stat_date)
      assert.are.equal("all", r.deliveryservice_name)
      names[r.stat_name] = r.stat_value
    end
    assert.are.equal(1.0, names.daily_maxgbps)
    assert.are.equal(0.0075, names.daily_bytesserved)
    -- One connection, reused; InfluxDB written before the store of record.
    assert.are.equal(1, pg_connects)
    local seq = {}
    for _, l in ipairs(pg_log) do seq[#seq + 1] = l.sql:match("^%u+") end
    -- the two SETs bound the transaction's statements (postgres.statement_timeout)
    assert.are.same({ "BEGIN", "SET", "SET", "SELECT", "DELETE", "INSERT", "DELETE", "INSERT", "COMMIT" },
      { table.unpack(seq, 1, 9) })
  end)

  it("a failed pg write rolls back, reports, and leaves the day pending", function()
    add_points("cdn1", { { D, 1e6 } })
    record("2026-03-04")
    pg_fail_on = "INSERT"
    local ok, err = summary.run_day("2026-03-05")
    assert.is_nil(ok)
    assert.truthy(err:find("PostgreSQL", 1, true) and err:find("stand-in failure", 1, true), err)
    assert.are.equal("ROLLBACK", pg_log[#pg_log].sql)
    assert.are.equal(1, #pg_table) -- only the old record
    -- tick retries it and stops at the first failure
    local n, terr = summary.tick(utc(2026, 3, 7, 1, 0))
    assert.is_nil(n)
    assert.truthy(terr)
    pg_fail_on = nil
    assert.are.equal(2, summary.tick(utc(2026, 3, 7, 1, 0)))
    assert.are.same({}, summary.pending_days(utc(2026, 3, 7, 1, 0)))
  end)

  it("a failed InfluxDB write keeps the day out of stats_summary", function()
    add_points("cdn1", { { D, 1e6 } })
    influx_fail = "HTTP 500: boom"
    local ok, err = summary.run_day(summary.day(D))
    assert.is_nil(ok)
    assert.truthy(err:find("boom", 1, true))
    assert.are.equal(0, #pg_table)
  end)

  it("a day without data is done in memory but not re-queried every tick", function()
    record("2026-03-08")
    assert.are.equal(1, summary.tick(utc(2026, 3, 10, 1, 0)))
    assert.are.same({}, summary.pending_days(utc(2026, 3, 10, 1, 0)))
  end)

  it("the api sink posts only rows Traffic Ops does not have yet", function()
    tstats.config.summary.sinks = { "api" }
    tstats.config.traffic_ops = { url = "https://to.example", user = "u", password = "p" }
    local posted, gets = {}, 0
    package.loaded.to = {
      new = function(o)
        assert.are.equal("https://to.example", o.url)
        return {
          summaries = function(_, q)
            gets = gets + 1
            if q.statName == "daily_maxgbps" then return { { statDate = "2026-03-05", statValue = 1.0 } } end
            return { { statDate = "2026-03-04", statValue = 9.0 } }
          end,
          post_summary = function(_, row) posted[#posted + 1] = row; return true end,
        }
      end,
    }
    add_points("cdn1", { { D, 1e6 } })
    assert(summary.run_day("2026-03-05"))
    assert.are.equal(2, gets)
    assert.are.equal(1, #posted)
    assert.are.same({ statName = "daily_bytesserved", statValue = 0.0075, cdnName = "cdn1",
                      deliveryServiceName = "all", statDate = "2026-03-05" }, posted[1])
    assert.are.equal(0, pg_connects)
    package.loaded.to = nil
  end)
end)

describe("summary.range", function()
  before_each(function() setup_world() end)

  it("recomputes each day with progress, leaving out days not closed yet", function()
    add_points("cdn1", { { utc(2026, 3, 8, 5), 1e6 }, { utc(2026, 3, 9, 5), 2e6 } })
    local seen = {}
    local n, rows = summary.range("2026-03-07", "2026-03-12", {
      now = utc(2026, 3, 10, 0, 5),
      progress = function(i, total, day) seen[#seen + 1] = ("%d/%d %s"):format(i, total, day.date) end,
    })
    -- At 00:05 with a 10-minute grace, 2026-03-08 is the newest closed day.
    assert.are.equal(2, n)
    assert.are.equal(2, rows)
    assert.are.same({ "1/2 2026-03-07", "2/2 2026-03-08" }, seen)
  end)

  it("rejects bad ranges", function()
    assert.is_nil(summary.range("2026-03-05", "2026-03-04"))
    assert.is_nil(summary.range("2026-02-30", "2026-03-04"))
    local n, err = summary.range("2026-03-10", "2026-03-11", { now = utc(2026, 3, 10, 12) })
    assert.is_nil(n)
    assert.truthy(err:find("no closed day", 1, true))
  end)

  it("stops at the first failing day and says how many were done", function()
    add_points("cdn1", { { utc(2026, 3, 5, 5), 1e6 }, { utc(2026, 3, 6, 5), 1e6 } })
    local calls = 0
    local real = tstats.influx.write
    tstats.influx.write = function(t)
      calls = calls + 1
      if calls == 2 then return nil, "down" end
      return real(t)
    end
    local n, err, done = summary.range("2026-03-05", "2026-03-07")
    assert.is_nil(n)
    assert.truthy(err:find("2026-03-06", 1, true))
    assert.are.equal(1, done)
  end)
end)

describe("rollup contract", function()
  before_each(function() setup_world() end)

  it("drops invalid rows and refuses bad modules", function()
    package.loaded["rollups.bad_rows"] = {
      name = "bad_rows", stats = { "x" },
      compute = function(day)
        return { { cdn = "c", stat_name = "x", value = 0 / 0 }, { cdn = "c", stat_name = "y", value = 1.0 },
                 { stat_name = "x", value = 1.0 }, { cdn = "c", stat_name = "x", value = 2, time = day.start + 5 } }
      end,
    }
    package.loaded["rollups.nostats"] = { compute = function() return {} end }
    assert.are.equal(1, summary.run_day("2026-03-05", { rollups = { "bad_rows" } }))
    assert.are.equal("float", math.type(pg_table[1].stat_value))
    assert.are.equal(3, #(function() local w = {} for _, l in ipairs(logs) do if l:find("^WARN") then w[#w + 1] = l end end return w end)())
    local ok, err = summary.run_day("2026-03-05", { rollups = { "nostats" } })
    assert.is_nil(ok)
    assert.truthy(err:find(".stats", 1, true))
    ok, err = summary.run_day("2026-03-05", { rollups = { "no_such_rollup" } })
    assert.is_nil(ok)
    assert.truthy(err:find("cannot load", 1, true))
    package.loaded["rollups.throws"] = { stats = { "x" }, compute = function() error("kaboom") end }
    ok, err = summary.run_day("2026-03-05", { rollups = { "throws" } })
    assert.is_nil(ok)
    assert.truthy(err:find("kaboom", 1, true))
  end)

  it("ds_daily_max example reads kbps.ds.1min per delivery service", function()
    local M = require "rollups.ds_daily_max"
    local got
    local rows = M.compute(summary.day(utc(2026, 3, 5)), {
      config = {}, cdn_where = "", rfc3339 = summary.rfc3339, ident = summary.ident,
      query = function(q, db)
        got = { q = q, db = db }
        return { { tags = { deliveryservice = "ds1", cdn = "cdn1" }, values = { { utc(2026, 3, 5, 7), 1234.0 } } } }
      end,
    })
    assert.are.equal("deliveryservice_stats", got.db)
    assert.truthy(got.q:find('"deliveryservice_stats"."monthly"."kbps.ds.1min"', 1, true))
    assert.are.same({ { cdn = "cdn1", deliveryservice = "ds1", stat_name = "daily_ds_maxkbps", value = 1234.0,
                        time = utc(2026, 3, 5, 7) } }, rows)
  end)
end)

describe("backfill-cq planning", function()
  before_each(function() setup_world() end)
  local backfill = require "backfill"
  local schema = {
    databases = {
      { name = "cache_stats", cqs = {
        { name = "cdn", query = [[CREATE CONTINUOUS QUERY cdn ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS "value" INTO "cache_stats"."monthly"."bandwidth.cdn.1min" FROM "cache_stats"."monthly"."bandwidth.1min" GROUP BY time(1m), cdn END]] },
        { name = "host", query = [[CREATE CONTINUOUS QUERY host ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS value INTO cache_stats.monthly."bandwidth.1min" FROM cache_stats.daily.bandwidth GROUP BY time(1m), * END]] },
      } },
      { name = "deliveryservice_stats", cqs = {
        { name = "day", query = [[CREATE CONTINUOUS QUERY day ON deliveryservice_stats RESAMPLE FOR 2d BEGIN SELECT max(value) AS "value" INTO "deliveryservice_stats"."indefinite"."max.kbps.ds.1day" FROM "deliveryservice_stats"."monthly"."kbps.ds.1min" GROUP BY time(1d), deliveryservice, cdn END]] },
        { name = "ds", query = [[CREATE CONTINUOUS QUERY ds ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."kbps.ds.1min" FROM "deliveryservice_stats"."daily".kbps WHERE cachegroup = 'total' OR cachegroup = 'GROUP BY x' GROUP BY time(1m), * END]] },
      } },
    },
  }

  it("orders producers before consumers and windows each SELECT INTO", function()
    local plan = assert(backfill.plan(schema, { databases = { cache = "cs2" } }))
    local names = {}
    for i, c in ipairs(plan) do names[i] = c.name .. "@" .. c.db end
    assert.are.same({ "host@cs2", "ds@deliveryservice_stats", "cdn@cs2", "day@deliveryservice_stats" }, names)
    assert.are.equal(86400, plan[4].interval)
    assert.are.equal('SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."kbps.ds.1min" FROM '
      .. "\"deliveryservice_stats\".\"daily\".kbps WHERE (cachegroup = 'total' OR cachegroup = 'GROUP BY x') AND "
      .. "time >= '2026-03-05T00:00:00Z' AND time < '2026-03-05T06:00:00Z' GROUP BY time(1m), *",
      backfill.windowed(plan[2], utc(2026, 3, 5), utc(2026, 3, 5, 6)))
    assert.truthy(backfill.windowed(plan[1], 0, 60):find('INTO cs2.monthly."bandwidth.1min" FROM cs2.daily.bandwidth WHERE time', 1, true))
  end)

  it("runs bounded, interval-aligned chunks and then the closed days' rollups", function()
    local ran = {}
    tstats.influx.query = function(q, opts)
      if q:find("INTO", 1, true) then
        ran[#ran + 1] = { q = q, db = opts.db }
        return { { name = "result", columns = { "time", "written" }, values = { { 0, 2.0 } } } }
      end
      return fake_query(q, opts)
    end
    local seen = 0
    local res = assert(backfill.run("2026-03-05T03:00:00Z", "2026-03-05T15:30:00Z", {
      schema = schema, chunk_hours = 6, progress = function() seen = seen + 1 end,
    }))
    -- 1-minute CQs: 03:00-09:00, 09:00-15:00, 15:00-15:30 (3 each); the 1d CQ one whole day.
    assert.are.equal(10, res.queries)
    assert.are.equal(20, res.written)
    assert.are.equal(1, res.days)
    assert.are.equal(11, seen)
    local last = ran[#ran].q
    assert.truthy(last:find("time >= '2026-03-05T00:00:00Z' AND time < '2026-03-06T00:00:00Z' GROUP BY time(1d)", 1, true), last)
    assert.truthy(ran[3].q:find("time >= '2026-03-05T15:00:00Z' AND time < '2026-03-05T15:30:00Z'", 1, true), ran[3].q)
    local bad, err = backfill.run("2026-03-05", "2026-03-04", { schema = schema })
    assert.is_nil(bad)
    assert.truthy(err:find("after", 1, true))
  end)

  it("refuses a cyclic schema", function()
    local cyc = { databases = { { name = "d", cqs = {
      { name = "a", query = [[CREATE CONTINUOUS QUERY a ON d BEGIN SELECT sum(value) INTO d.r.x FROM d.r.y GROUP BY time(1m) END]] },
      { name = "b", query = [[CREATE CONTINUOUS QUERY b ON d BEGIN SELECT sum(value) INTO d.r.y FROM d.r.x GROUP BY time(1m) END]] },
    } } } }
    local p, err = backfill.plan(cyc, {})
    assert.is_nil(p)
    assert.truthy(err:find("cyclic", 1, true))
  end)
end)
