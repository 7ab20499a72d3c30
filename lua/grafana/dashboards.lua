-- Grafana dashboards as data (Lua side), written as JSON by `tstats grafana`.
-- Each dashboard is a table close to Grafana's model; panels are
-- { title=, unit=, datasource=, targets = { {query=, alias=}, ... } } and the
-- command fills ids, grid positions and the fields Grafana wants. Operators add
-- panels here (or in <script_dir>/grafana/dashboards.lua).
-- Queries follow ATC's dashboards with their defects fixed: bandwidth is stored
-- in kbps, so every bps panel multiplies by 1000; template variables read the
-- 1-minute series of the "monthly" policy, where the data is (ATC's read
-- "monthly"."bandwidth"/"kbps", which only exist in "daily").
local D = {}

-- $timeFilter, $__interval and template variables are Grafana's; the time
-- grouping uses $__interval with a 1 m floor (the series are 1-minute means).

D.list = {
  {
    uid = "tstats-cdn", title = "CDN overview", tags = { "tstats", "cdn" },
    variables = {
      { name = "cdn", datasource = "cache_stats", multi = true,
        query = 'SHOW TAG VALUES FROM "monthly"."bandwidth.cdn.1min" WITH KEY = "cdn"' },
    },
    panels = {
      { title = "Bandwidth by CDN", unit = "bps", datasource = "cache_stats", stack = false, targets = {
        { alias = "$tag_cdn", query = [[SELECT mean("value")*1000 FROM "monthly"."bandwidth.cdn.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn" fill(null)]] } } },
      { title = "Bandwidth by CDN and cache type", unit = "bps", datasource = "cache_stats", targets = {
        { alias = "$tag_cdn $tag_type", query = [[SELECT mean("value")*1000 FROM "monthly"."bandwidth.cdn.type.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn", "type" fill(null)]] } } },
      { title = "Client connections by CDN", unit = "short", datasource = "cache_stats", targets = {
        { alias = "$tag_cdn", query = [[SELECT mean("value") FROM "monthly"."connections.cdn.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn" fill(null)]] } } },
      { title = "Client connections by CDN and cache type", unit = "short", datasource = "cache_stats", targets = {
        { alias = "$tag_cdn $tag_type", query = [[SELECT mean("value") FROM "monthly"."connections.cdn.type.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn", "type" fill(null)]] } } },
      { title = "Capacity and bandwidth", unit = "bps", datasource = "cache_stats", stack = false, targets = {
        { alias = "capacity $tag_cdn", query = [[SELECT mean("value")*1000 FROM "monthly"."maxkbps.cdn.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn" fill(null)]] },
        { alias = "bandwidth $tag_cdn", query = [[SELECT mean("value")*1000 FROM "monthly"."bandwidth.cdn.1min" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time($__interval), "cdn" fill(null)]] } } },
    },
  },
  {
    uid = "tstats-cachegroup", title = "Cache group", tags = { "tstats", "cachegroup" },
    variables = {
      { name = "cachegroup", datasource = "cache_stats",
        query = 'SHOW TAG VALUES FROM "monthly"."bandwidth.1min" WITH KEY = "cachegroup"' },
    },
    panels = {
      { title = "Total bandwidth (stacked)", unit = "bps", datasource = "cache_stats", stack = true, targets = {
        { alias = "$tag_hostname", query = [[SELECT mean("value")*1000 FROM "monthly"."bandwidth.1min" WHERE "cachegroup" = '$cachegroup' AND $timeFilter GROUP BY time($__interval), "hostname" fill(null)]] } } },
      { title = "Connections (stacked)", unit = "short", datasource = "cache_stats", stack = true, targets = {
        { alias = "$tag_hostname", query = [[SELECT mean("value") FROM "monthly"."connections.1min" WHERE "cachegroup" = '$cachegroup' AND $timeFilter GROUP BY time($__interval), "hostname" fill(null)]] } } },
    },
  },
  {
    uid = "tstats-deliveryservice", title = "Delivery service", tags = { "tstats", "deliveryservice" },
    variables = {
      { name = "deliveryservice", datasource = "deliveryservice_stats",
        query = 'SHOW TAG VALUES FROM "monthly"."kbps.ds.1min" WITH KEY = "deliveryservice"' },
    },
    panels = {
      { title = "Bandwidth", unit = "bps", datasource = "deliveryservice_stats", targets = {
        { alias = "$tag_deliveryservice", query = [[SELECT mean("value")*1000 FROM "monthly"."kbps.ds.1min" WHERE "deliveryservice" = '$deliveryservice' AND "cachegroup" = 'total' AND $timeFilter GROUP BY time($__interval), "deliveryservice" fill(null)]] } } },
      { title = "Transactions per second", unit = "reqps", datasource = "deliveryservice_stats", targets = {
        { alias = "2xx", query = [[SELECT mean("value") FROM "monthly"."tps_2xx.ds.1min" WHERE "deliveryservice" = '$deliveryservice' AND $timeFilter GROUP BY time($__interval) fill(null)]] },
        { alias = "3xx", query = [[SELECT mean("value") FROM "monthly"."tps_3xx.ds.1min" WHERE "deliveryservice" = '$deliveryservice' AND $timeFilter GROUP BY time($__interval) fill(null)]] },
        { alias = "4xx", query = [[SELECT mean("value") FROM "monthly"."tps_4xx.ds.1min" WHERE "deliveryservice" = '$deliveryservice' AND $timeFilter GROUP BY time($__interval) fill(null)]] },
        { alias = "5xx", query = [[SELECT mean("value") FROM "monthly"."tps_5xx.ds.1min" WHERE "deliveryservice" = '$deliveryservice' AND $timeFilter GROUP BY time($__interval) fill(null)]] } } },
      { title = "Bandwidth by cache group", unit = "bps", datasource = "deliveryservice_stats", stack = true, targets = {
        { alias = "$tag_cachegroup", query = [[SELECT mean("value")*1000 FROM "monthly"."kbps.cg.1min" WHERE "deliveryservice" = '$deliveryservice' AND "cachegroup" != 'all' AND $timeFilter GROUP BY time($__interval), "cachegroup" fill(null)]] } } },
    },
  },
  {
    uid = "tstats-server", title = "Server", tags = { "tstats", "server" },
    variables = {
      { name = "cachegroup", datasource = "cache_stats",
        query = 'SHOW TAG VALUES FROM "monthly"."bandwidth.1min" WITH KEY = "cachegroup"' },
      { name = "hostname", datasource = "cache_stats",
        query = [[SHOW TAG VALUES FROM "monthly"."bandwidth.1min" WITH KEY = "hostname" WHERE "cachegroup" = '$cachegroup']] },
    },
    time = { from = "now-24h", to = "now" },
    panels = {
      { title = "Bandwidth", unit = "bps", datasource = "cache_stats", targets = {
        { alias = "$tag_hostname", query = [[SELECT mean("value")*1000 FROM "monthly"."bandwidth.1min" WHERE "hostname" = '$hostname' AND $timeFilter GROUP BY time($__interval), "hostname" fill(null)]] } } },
      { title = "Client connections", unit = "short", datasource = "cache_stats", targets = {
        { alias = "$tag_hostname", query = [[SELECT mean("value") FROM "monthly"."connections.1min" WHERE "hostname" = '$hostname' AND $timeFilter GROUP BY time($__interval), "hostname" fill(null)]] } } },
      { title = "Capacity (maxKbps)", unit = "bps", datasource = "cache_stats", targets = {
        { alias = "$tag_hostname", query = [[SELECT mean("value")*1000 FROM "monthly"."maxkbps.1min" WHERE "hostname" = '$hostname' AND $timeFilter GROUP BY time($__interval), "hostname" fill(null)]] } } },
      { title = "Cache wrap count", unit = "short", datasource = "cache_stats", targets = {
        { alias = "volume 1", query = [[SELECT mean("vol1_wrap_count") FROM "monthly"."wrap_count.1min" WHERE "hostname" = '$hostname' AND $timeFilter GROUP BY time($__interval) fill(null)]] },
        { alias = "volume 2", query = [[SELECT mean("vol2_wrap_count") FROM "monthly"."wrap_count.1min" WHERE "hostname" = '$hostname' AND $timeFilter GROUP BY time($__interval) fill(null)]] } } },
    },
  },
  {
    uid = "tstats-daily", title = "Daily summaries", tags = { "tstats", "daily" },
    time = { from = "now-90d", to = "now" },
    variables = {
      { name = "cdn", datasource = "daily_stats", multi = true,
        query = 'SHOW TAG VALUES FROM "indefinite"."daily_maxgbps" WITH KEY = "cdn"' },
    },
    panels = {
      { title = "Daily max bandwidth", unit = "bps", datasource = "daily_stats", bars = true, interval = "1d", targets = {
        { alias = "$tag_cdn", query = [[SELECT max("value")*1000000000 FROM "indefinite"."daily_maxgbps" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time(1d), "cdn" fill(none)]] } } },
      { title = "Daily bytes served", unit = "decbytes", datasource = "daily_stats", bars = true, interval = "1d", targets = {
        { alias = "$tag_cdn", query = [[SELECT sum("value")*1000000000000 FROM "indefinite"."daily_bytesserved" WHERE "cdn" =~ /^$cdn$/ AND $timeFilter GROUP BY time(1d), "cdn" fill(none)]] } } },
    },
  },
}

return D
