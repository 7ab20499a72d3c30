-- InfluxDB schema (Lua side): the databases, retention policies and
-- continuous queries of ATC's create_ts_databases, statement for statement
-- (ATC.md 6.1), so existing Grafana dashboards and Traffic Ops keep working.
-- `tstats setup-influx` runs schema.statements(); backfill-cq reuses the CQs.
local S = {}

S.replication_default = 3

S.databases = {
  {
    name = "cache_stats",
    rps = {
      { name = "daily", duration = "26h", default = true },
      { name = "monthly", duration = "30d", default = false },
      { name = "indefinite", duration = "INF", default = false },
    },
    cqs = {
      { name = "bandwidth_1min", query = [==[CREATE CONTINUOUS QUERY bandwidth_1min ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "cache_stats"."monthly"."bandwidth.1min" FROM "cache_stats"."daily".bandwidth GROUP BY time(1m), * END]==] },
      { name = "connections_1min", query = [==[CREATE CONTINUOUS QUERY connections_1min ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "cache_stats"."monthly"."connections.1min" FROM "cache_stats"."daily"."ats.proxy.process.http.current_client_connections" GROUP BY time(1m), * END]==] },
      { name = "bandwidth_cdn_1min", query = [==[CREATE CONTINUOUS QUERY bandwidth_cdn_1min ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS "value" INTO "cache_stats"."monthly"."bandwidth.cdn.1min" FROM "cache_stats"."monthly"."bandwidth.1min" GROUP BY time(1m), cdn END]==] },
      { name = "connections_cdn_1min", query = [==[CREATE CONTINUOUS QUERY connections_cdn_1min ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS "value" INTO "cache_stats"."monthly"."connections.cdn.1min" FROM "cache_stats"."monthly"."connections.1min" GROUP BY time(1m), cdn END]==] },
      { name = "bandwidth_cdn_type_1min", query = [==[CREATE CONTINUOUS QUERY bandwidth_cdn_type_1min ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS "value" INTO "cache_stats"."monthly"."bandwidth.cdn.type.1min" FROM "cache_stats"."monthly"."bandwidth.1min" GROUP BY time(1m), cdn, type END]==] },
      { name = "connections_cdn_type_1min", query = [==[CREATE CONTINUOUS QUERY connections_cdn_type_1min ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS "value" INTO "cache_stats"."monthly"."connections.cdn.type.1min" FROM "cache_stats"."monthly"."connections.1min" GROUP BY time(1m), cdn, type END]==] },
      { name = "maxKbps_1min", query = [==[CREATE CONTINUOUS QUERY maxKbps_1min ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS value INTO cache_stats.monthly."maxkbps.1min" FROM cache_stats.daily.maxKbps GROUP BY time(1m), * END]==] },
      { name = "maxkbps_cdn_1min", query = [==[CREATE CONTINUOUS QUERY maxkbps_cdn_1min ON cache_stats RESAMPLE FOR 5m BEGIN SELECT sum(value) AS value INTO cache_stats.monthly."maxkbps.cdn.1min" FROM cache_stats.monthly."maxkbps.1min" GROUP BY time(1m), cdn END]==] },
      { name = "wrap_count_vol1_1m", query = [==[CREATE CONTINUOUS QUERY wrap_count_vol1_1m ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS vol1_wrap_count INTO cache_stats.monthly."wrap_count.1min" FROM cache_stats.daily."ats.proxy.process.cache.volume_1.wrap_count" GROUP BY time(1m), * END]==] },
      { name = "wrap_count_vol2_1m", query = [==[CREATE CONTINUOUS QUERY wrap_count_vol2_1m ON cache_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS vol2_wrap_count INTO cache_stats.monthly."wrap_count.1min" FROM cache_stats.daily."ats.proxy.process.cache.volume_2.wrap_count" GROUP BY time(1m), * END]==] },
    },
  },
  {
    name = "daily_stats",
    rps = {
      { name = "indefinite", duration = "INF", default = true },
    },
    cqs = {
    },
  },
  {
    name = "deliveryservice_stats",
    rps = {
      { name = "daily", duration = "26h", default = true },
      { name = "monthly", duration = "30d", default = false },
      { name = "indefinite", duration = "INF", default = false },
    },
    cqs = {
      { name = "tps_2xx_ds_1min", query = [==[CREATE CONTINUOUS QUERY tps_2xx_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."tps_2xx.ds.1min" FROM "deliveryservice_stats"."daily".tps_2xx WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "tps_3xx_ds_1min", query = [==[CREATE CONTINUOUS QUERY tps_3xx_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."tps_3xx.ds.1min" FROM "deliveryservice_stats"."daily".tps_3xx WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "tps_4xx_ds_1min", query = [==[CREATE CONTINUOUS QUERY tps_4xx_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."tps_4xx.ds.1min" FROM "deliveryservice_stats"."daily".tps_4xx WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "tps_5xx_ds_1min", query = [==[CREATE CONTINUOUS QUERY tps_5xx_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."tps_5xx.ds.1min" FROM "deliveryservice_stats"."daily".tps_5xx WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "tps_total_ds_1min", query = [==[CREATE CONTINUOUS QUERY tps_total_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."tps_total.ds.1min" FROM "deliveryservice_stats"."daily".tps_total WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "kbps_ds_1min", query = [==[CREATE CONTINUOUS QUERY kbps_ds_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."kbps.ds.1min" FROM "deliveryservice_stats"."daily".kbps WHERE cachegroup = 'total' GROUP BY time(1m), * END]==] },
      { name = "kbps_cg_1min", query = [==[CREATE CONTINUOUS QUERY kbps_cg_1min ON deliveryservice_stats RESAMPLE FOR 2m BEGIN SELECT mean(value) AS "value" INTO "deliveryservice_stats"."monthly"."kbps.cg.1min" FROM "deliveryservice_stats"."daily".kbps WHERE cachegroup != 'total' GROUP BY time(1m), * END]==] },
      { name = "max_kbps_ds_1day", query = [==[CREATE CONTINUOUS QUERY max_kbps_ds_1day ON deliveryservice_stats RESAMPLE FOR 2d BEGIN SELECT max(value) AS "value" INTO "deliveryservice_stats"."indefinite"."max.kbps.ds.1day" FROM "deliveryservice_stats"."monthly"."kbps.ds.1min" GROUP BY time(1d), deliveryservice, cdn END]==] },
    },
  },
}

-- Every statement in ATC's order. Databases named in `rename` (the
-- databases.* config keys) are substituted, so a site with other names works.
function S.statements(replication, rename)
  replication = replication or S.replication_default
  rename = rename or {}
  local out = {}
  for _, db in ipairs(S.databases) do
    local name = rename[db.name] or db.name
    out[#out + 1] = ("CREATE DATABASE %s"):format(name)
    for _, rp in ipairs(db.rps) do
      out[#out + 1] = ("CREATE RETENTION POLICY %s ON %s DURATION %s REPLICATION %d%s"):format(
        rp.name, name, rp.duration, replication, rp.default and " DEFAULT" or "")
    end
    for _, cq in ipairs(db.cqs) do
      local stmt = cq.query
      if name ~= db.name then stmt = stmt:gsub(db.name, name) end
      out[#out + 1] = stmt
    end
  end
  return out
end

-- The SELECT ... INTO of a CQ with a time window inserted before GROUP BY,
-- for backfills (CQs never backfill by themselves).
function S.cq_select(cq, from_rfc3339, to_rfc3339)
  local sel = cq.query:match("BEGIN%s+(.-)%s+END%s*$")
  if not sel then return nil end
  local where = ("time >= '%s' AND time < '%s'"):format(from_rfc3339, to_rfc3339)
  local pre, groupby = sel:match("^(.-)%s+(GROUP BY.*)$")
  if not pre then pre, groupby = sel, "" end
  if pre:find("%sWHERE%s") then
    pre = pre:gsub("%sWHERE%s", " WHERE " .. where .. " AND ", 1)
  else
    pre = pre .. " WHERE " .. where
  end
  return pre .. " " .. groupby
end

return S
