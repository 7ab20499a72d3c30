-- stored.lua: what tstats has stored (Lua side, run by `tstats script stored`): points per
-- database and CDN in InfluxDB, the daily summaries in daily_stats and, when the pg sink is
-- configured, in Traffic Ops' stats_summary. scripts/demo ends with it.
--
-- Usage: tstats [--config FILE] script stored
-- Exit code 0, or 1 when a store could not be read.
local tstats = require "tstats"

local cfg = tstats.config
local ok_all = true

local function count_by_cdn(db, rp)
  local series, err = tstats.influx.query(('SELECT count(value) FROM %q./.*/ GROUP BY cdn'):format(rp), { db = db })
  if not series then
    io.stderr:write(("%s: %s\n"):format(db, tostring(err)))
    ok_all = false
    return {}
  end
  local per = {}
  for _, s in ipairs(series) do
    local cdn = (s.tags and s.tags.cdn) or "(no cdn)"
    if cdn == "" then cdn = "(no cdn)" end
    local e = per[cdn] or { points = 0, measurements = 0 }
    per[cdn] = e
    e.points = e.points + math.floor(tonumber(s.values[1][2]) or 0)
    e.measurements = e.measurements + 1
  end
  return per
end

print("What tstats stored")
print(("  %-28s %-16s %12s %13s"):format("database.rp", "cdn", "points", "measurements"))
local total = 0
for _, pair in ipairs({ { cfg.databases.cache, cfg.retention.cache }, { cfg.databases.ds, cfg.retention.ds } }) do
  local per = count_by_cdn(pair[1], pair[2])
  local cdns = {}
  for c in pairs(per) do cdns[#cdns + 1] = c end
  table.sort(cdns)
  if #cdns == 0 then print(("  %-28s %-16s %12d %13d"):format(pair[1] .. "." .. pair[2], "-", 0, 0)) end
  for _, c in ipairs(cdns) do
    print(("  %-28s %-16s %12d %13d"):format(pair[1] .. "." .. pair[2], c, per[c].points, per[c].measurements))
    total = total + per[c].points
  end
end
print(("  %d points in all"):format(total))

local daily = cfg.databases.daily
local rows, err = tstats.influx.rows(('SELECT value, cdn, deliveryservice FROM %q./.*/'):format(cfg.retention.daily), { db = daily, epoch = "s" })
print()
if not rows then
  print(("daily summaries in %s: cannot read: %s"):format(daily, tostring(err)))
  ok_all = false
elseif #rows == 0 then
  print(("daily summaries in %s: none yet (a day is summarized %d s after it closes, when it has data)"):format(daily,
    cfg.summary.grace))
else
  print(("daily summaries in %s:"):format(daily))
  print(("  %-10s %-16s %-20s %-22s %s"):format("day", "cdn", "deliveryservice", "stat", "value"))
  table.sort(rows, function(a, b) return a.time < b.time or (a.time == b.time and tostring(a._series) < tostring(b._series)) end)
  for _, r in ipairs(rows) do
    print(("  %-10s %-16s %-20s %-22s %s"):format(os.date("!%Y-%m-%d", r.time), tostring(r.cdn), tostring(r.deliveryservice),
      tostring(r._series), require("summary").num(r.value)))
  end
end

local pg_sink = false
for _, s in ipairs(cfg.summary.sinks or {}) do if s == "pg" then pg_sink = true end end
if pg_sink and cfg.postgres.conninfo then
  local conn, cerr = tstats.pg.connect(cfg.postgres.conninfo)
  if not conn then
    print("stats_summary (PostgreSQL): cannot connect: " .. tostring(cerr))
    ok_all = false
  else
    local r = conn:query("SELECT count(*) AS n, count(DISTINCT stat_date) AS days FROM stats_summary")
    if r then print(("stats_summary (PostgreSQL): %d rows over %d days"):format(r[1].n, r[1].days))
    else ok_all = false end
    conn:close()
  end
end
return ok_all
