-- Derived metrics (Lua side, definitions only): per-poll series ATC has no
-- CQ for, computed at ingest by the C engine: bandwidth per CDN and per cache
-- group, the RAM cache hit rate of every cache (an ATS counter, across
-- restarts), its disk use ratio and the busiest EDGE cache, all from stats
-- of the stock TRAFFIC_STATS profile. Enable with
-- `metrics = { "cache_health" }`; these are the benchmark's five definitions.
local metric = require("metrics").metric

return {
  -- sum of the caches' bandwidth per CDN, every poll (kbps)
  metric { name = "bandwidth.cdn", from = "bandwidth", endpoint = "CacheStats", agg = "sum", group_by = { "cdn" } },
  -- per cache group, in Mbps
  metric { name = "cachegroup.kbps", from = "bandwidth", endpoint = "CacheStats", agg = "sum", scale = 1 / 1000,
           group_by = { "cdn", "cachegroup" }, help = "Mbps per cache group (kbps / 1000)" },
  -- RAM cache hits per second of every cache, from an ATS counter; a restart (counter reset) or a
  -- gap longer than max_gap gives no point for that cache that poll (both counted)
  metric { name = "ram_cache.hits.rate", from = "ats.proxy.process.cache.ram_cache.hits", endpoint = "CacheStats",
           agg = "rate", group_by = { "cdn", "cachegroup", "hostname", "type" }, max_gap = 120 },
  -- share of the cache disk in use, per cache (two stats of the same cache)
  metric { name = "cache.disk.used_ratio", from = "ats.proxy.process.cache.bytes_used",
           over = "ats.proxy.process.cache.bytes_total", endpoint = "CacheStats", agg = "ratio",
           group_by = { "cdn", "cachegroup", "hostname", "type" } },
  -- the highest maxKbps among EDGE caches per CDN
  metric { name = "edge.maxkbps.max", from = "maxKbps", endpoint = "CacheStats", agg = "max",
           where = { type = "EDGE" }, group_by = { "cdn" } },
}
