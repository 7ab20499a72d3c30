-- Derived metrics (Lua side, definitions only): the five kinds of
-- cache_health.lua (two sums, a rate over every cache, a ratio, a filtered
-- max) summarised per CDN and cache group instead of per cache: every cache's
-- samples feed them, ~25 points per poll come out. The benchmark runs both
-- sets (docs/BENCHMARKS.md). Enable with `metrics = { "cdn_summary" }`.
local metric = require("metrics").metric

return {
  metric { name = "bandwidth.cdn", from = "bandwidth", endpoint = "CacheStats", agg = "sum", group_by = { "cdn" } },
  metric { name = "cachegroup.kbps", from = "bandwidth", endpoint = "CacheStats", agg = "sum", scale = 1 / 1000,
           group_by = { "cdn", "cachegroup" }, help = "Mbps per cache group (kbps / 1000)" },
  -- the caches' RAM cache hits per second, summed per CDN and cache type (each cache's counter rated on its own)
  metric { name = "ram_cache.hits.rate.cdn", from = "ats.proxy.process.cache.ram_cache.hits", endpoint = "CacheStats",
           agg = "rate", group_by = { "cdn", "type" }, max_gap = 120 },
  -- disk in use over disk size of the cache group's caches
  metric { name = "cache.disk.used_ratio.cachegroup", from = "ats.proxy.process.cache.bytes_used",
           over = "ats.proxy.process.cache.bytes_total", endpoint = "CacheStats", agg = "ratio",
           group_by = { "cdn", "cachegroup" } },
  metric { name = "edge.maxkbps.max", from = "maxKbps", endpoint = "CacheStats", agg = "max",
           where = { type = "EDGE" }, group_by = { "cdn" } },
}
