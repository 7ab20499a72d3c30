-- cdn_report.lua: example one-off operator script (Lua side, run by `tstats script`).
-- Prints daily Max Gbps and TB served per CDN for a date range, side by side from
-- InfluxDB daily_stats and from Traffic Ops' stats_summary (when postgres.conninfo is
-- set), flagging days where they disagree or where stats_summary holds duplicates
-- (as Traffic Stats leaves behind: ATC.md 5.10).
--
-- Usage:
--   tstats --config /etc/tstats/config.lua script lua/scripts/cdn_report.lua FROM TO [CDN]
--   FROM, TO   YYYY-MM-DD, inclusive (UTC days)
--   CDN        only this CDN
-- Output: one line per date and CDN, tab-separated:
--   date  cdn  max_gbps(influx)  tb(influx)  max_gbps(pg)  tb(pg)  note
-- Exit code 0, or 1 when a store could not be read.
local tstats = require "tstats"
local summary = require "summary"

local from, to, only = arg[1], arg[2], arg[3]
local s, e = summary.parse_date(from or ""), summary.parse_date(to or "")
if not s or not e or e < s then
  io.stderr:write("usage: tstats script cdn_report.lua FROM TO [CDN]   (dates YYYY-MM-DD, FROM <= TO)\n")
  return false
end
local stop = e + 86400
local cfg = tstats.config
local STATS = { "daily_maxgbps", "daily_bytesserved" }
local rows, keys, ok_all = {}, {}, true

local function cell(date, cdn)
  local k = date .. "\0" .. cdn
  if not rows[k] then
    rows[k] = { date = date, cdn = cdn, influx = {}, pg = {}, dups = 0 }
    keys[#keys + 1] = k
  end
  return rows[k]
end

-- InfluxDB: the daily_maxgbps point carries the time of the maximum, so the
-- day is derived from the time, not from the point's position.
local db, rp = cfg.databases.daily, cfg.retention.daily
local where = ("time >= '%s' AND time < '%s'%s"):format(summary.rfc3339(s), summary.rfc3339(stop),
  only and summary.cdn_where({ only }) or "")
for _, stat in ipairs(STATS) do
  local series, err = tstats.influx.query(("SELECT value FROM %s.%s WHERE %s AND deliveryservice = 'all' GROUP BY cdn")
    :format(summary.ident(rp), summary.ident(stat), where), { db = db, epoch = "s" })
  if not series then
    tstats.error("InfluxDB " .. db .. ": " .. tostring(err))
    ok_all = false
    break
  end
  for _, se in ipairs(series) do
    for _, v in ipairs(se.values or {}) do
      if type(v[2]) == "number" then cell(summary.date(v[1]), se.tags.cdn).influx[stat] = v[2] end
    end
  end
end

local conninfo = cfg.postgres and cfg.postgres.conninfo
if conninfo then
  local c, err = tstats.pg.connect(conninfo)
  local res
  if c then
    res, err = c:query("SELECT stat_date::text AS d, cdn_name, stat_name, stat_value FROM stats_summary"
      .. " WHERE stat_date >= $1::date AND stat_date <= $2::date AND deliveryservice_name = 'all'"
      .. " AND stat_name IN ($3, $4) AND ($5::text IS NULL OR cdn_name = $5) ORDER BY summary_time",
      from, to, STATS[1], STATS[2], only)
    c:close()
  end
  if not res then
    tstats.error("stats_summary: " .. tostring(err))
    ok_all = false
  else
    for _, r in ipairs(res) do
      local x = cell(r.d, r.cdn_name)
      if x.pg[r.stat_name] ~= nil then x.dups = x.dups + 1 end
      x.pg[r.stat_name] = r.stat_value -- newest wins, as Traffic Ops' lastSummaryDate does
    end
  end
end

table.sort(keys)
local function fmt(v) return v == nil and "-" or summary.num(v) end
print(table.concat({ "date", "cdn", "max_gbps(influx)", "tb(influx)", "max_gbps(pg)", "tb(pg)", "note" }, "\t"))
for _, k in ipairs(keys) do
  local x = rows[k]
  local notes = {}
  if conninfo then
    for _, st in ipairs(STATS) do
      if x.influx[st] ~= x.pg[st] then notes[#notes + 1] = st .. " differs" end
    end
  end
  if x.dups > 0 then notes[#notes + 1] = x.dups .. " duplicate row(s) in stats_summary" end
  print(table.concat({ x.date, x.cdn, fmt(x.influx.daily_maxgbps), fmt(x.influx.daily_bytesserved),
    fmt(x.pg.daily_maxgbps), fmt(x.pg.daily_bytesserved), table.concat(notes, "; ") }, "\t"))
end
return ok_all
