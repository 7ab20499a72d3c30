-- Derived metrics (Lua side, definitions only): ATC's cache and delivery
-- service continuous queries computed at ingest by the C engine instead of
-- inside influxd. Each definition writes what the CQ of the same name writes
-- (measurement, tags, 1-minute time stamps, RP monthly): a series' mean over
-- the minute, then the sum over the group, exactly the CQ chain
-- bandwidth.1min -> bandwidth.cdn.1min. Enable with `metrics = { "atc_cq" }`
-- and drop the matching CQs (DROP CONTINUOUS QUERY ...), or both write the
-- same points.
local metric = require("metrics").metric

return {
  -- CQ bandwidth_cdn_1min: sum(mean(bandwidth) per cache) per CDN
  metric { name = "bandwidth.cdn.1min", from = "bandwidth", endpoint = "CacheStats", agg = "sum", window = 60,
           group_by = { "cdn" }, rp = "monthly" },
  -- CQ bandwidth_cdn_type_1min
  metric { name = "bandwidth.cdn.type.1min", from = "bandwidth", endpoint = "CacheStats", agg = "sum", window = 60,
           group_by = { "cdn", "type" }, rp = "monthly" },
  -- CQ connections_cdn_1min
  metric { name = "connections.cdn.1min", from = "ats.proxy.process.http.current_client_connections",
           endpoint = "CacheStats", agg = "sum", window = 60, group_by = { "cdn" }, rp = "monthly" },
  -- CQ maxkbps_cdn_1min
  metric { name = "maxkbps.cdn.1min", from = "maxKbps", endpoint = "CacheStats", agg = "sum", window = 60,
           group_by = { "cdn" }, rp = "monthly" },
  -- CQ kbps_ds_1min: a DS's total kbps, mean over the minute (GROUP BY *: one series per group)
  metric { name = "kbps.ds.1min", from = "kbps", endpoint = "DsStats", agg = "mean", window = 60,
           where = { cachegroup = "total" }, group_by = { "cachegroup", "cdn", "deliveryservice" }, rp = "monthly" },
  -- CQ kbps_cg_1min: per DS and cache group (including the cachegroup=all rows, as the CQ does)
  metric { name = "kbps.cg.1min", from = "kbps", endpoint = "DsStats", agg = "mean", window = 60,
           where = { cachegroup = { ["not"] = "total" } }, group_by = { "cachegroup", "cdn", "deliveryservice", "type" },
           rp = "monthly" },
}
