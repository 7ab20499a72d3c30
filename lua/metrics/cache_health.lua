-- Derived metrics (Lua side, definitions only): per-poll series ATC has no
-- CQ for, computed at ingest by the C engine: per cache group bandwidth, the
-- request rate of every cache (from an ATS counter, across restarts), its
-- fresh-hit ratio and the busiest EDGE cache. Enable with
-- `metrics = { "cache_health" }`; these are the benchmark's five definitions.
local metric = require("metrics").metric

return {
  -- sum of the caches' bandwidth per CDN, every poll (kbps)
  metric { name = "bandwidth.cdn", from = "bandwidth", endpoint = "CacheStats", agg = "sum", group_by = { "cdn" } },
  -- per cache group, in Mbps
  metric { name = "cachegroup.kbps", from = "bandwidth", endpoint = "CacheStats", agg = "sum", scale = 1 / 1000,
           group_by = { "cdn", "cachegroup" }, help = "Mbps per cache group (kbps / 1000)" },
  -- requests per second of every cache; a restart (counter reset) or a gap gives no point that poll
  metric { name = "requests.rate", from = "ats.proxy.process.http.completed_requests", endpoint = "CacheStats",
           agg = "rate", group_by = { "cdn", "cachegroup", "hostname", "type" }, max_gap = 120 },
  -- fresh hits over completed requests since the cache started, per cache
  metric { name = "hit_fresh.ratio", from = "ats.proxy.process.http.transaction_counts.hit_fresh",
           over = "ats.proxy.process.http.completed_requests", endpoint = "CacheStats", agg = "ratio",
           group_by = { "cdn", "cachegroup", "hostname", "type" } },
  -- the highest maxKbps among EDGE caches per CDN
  metric { name = "edge.maxkbps.max", from = "maxKbps", endpoint = "CacheStats", agg = "max",
           where = { type = "EDGE" }, group_by = { "cdn" } },
}
