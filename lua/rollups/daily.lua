-- Stock daily rollup (Lua side, run by lua/summary.lua): per CDN "Max Gbps" and
-- "Total Bytes Served" of one UTC day, from cache_stats."monthly"."bandwidth.cdn.1min".
-- Same numbers Traffic Stats puts in Traffic Ops (ATC.md 5.10) minus its bugs: the
-- window is [00:00, 24:00) with 00:00 included, and the date is the UTC day.
-- Contract for rollup modules: lua/rollups/README.md.
local M = {
  name = "daily",
  stats = { "daily_maxgbps", "daily_bytesserved" },
}

local KBPS_PER_GBPS = 1e6
local SECONDS_PER_BUCKET = 60
local BITS_PER_BYTE = 8
local KB_PER_TB = 1e9 -- decimal units, as Traffic Stats: kilobytes -> terabytes

-- rows: array of { cdn=, deliveryservice="all", stat_name=, value=<float>, time=<unix s> }
function M.compute(day, ctx)
  local cfg = ctx.config or {}
  local db = (cfg.databases and cfg.databases.cache) or "cache_stats"
  -- The RP is "monthly" whatever retention.cache says: that is where the
  -- continuous queries put the 1-minute CDN series (ATC.md 6.1).
  local from = ctx.ident(db) .. '."monthly"."bandwidth.cdn.1min"'
  local where = ("time >= '%s' AND time < '%s'%s"):format(ctx.rfc3339(day.start), ctx.rfc3339(day.stop),
    ctx.cdn_where)

  -- Without GROUP BY time, InfluxDB answers max() with the time of the maximum point.
  local maxes, err = ctx.query(("SELECT max(value) FROM %s WHERE %s GROUP BY cdn"):format(from, where), db)
  if not maxes then return nil, "daily_maxgbps query: " .. tostring(err) end
  local means
  means, err = ctx.query(("SELECT mean(value) FROM %s WHERE %s GROUP BY time(1m), cdn"):format(from, where), db)
  if not means then return nil, "daily_bytesserved query: " .. tostring(err) end

  local rows = {}
  for _, s in ipairs(maxes) do
    local cdn = s.tags and s.tags.cdn
    local v = s.values and s.values[1]
    if type(cdn) == "string" and cdn ~= "" and v and type(v[2]) == "number" and math.type(v[1]) == "integer" then
      rows[#rows + 1] = { cdn = cdn, deliveryservice = "all", stat_name = "daily_maxgbps",
                          value = v[2] / KBPS_PER_GBPS, time = v[1] }
    end
  end
  for _, s in ipairs(means) do
    local cdn = s.tags and s.tags.cdn
    if type(cdn) == "string" and cdn ~= "" then
      -- Bucket order, null (empty) buckets skipped: kilobytes per bucket summed,
      -- then one division, exactly as Traffic Stats does it.
      local kb, n = 0.0, 0
      for _, v in ipairs(s.values or {}) do
        if type(v[2]) == "number" then
          kb = kb + v[2] * SECONDS_PER_BUCKET / BITS_PER_BYTE
          n = n + 1
        end
      end
      if n > 0 then
        rows[#rows + 1] = { cdn = cdn, deliveryservice = "all", stat_name = "daily_bytesserved",
                            value = kb / KB_PER_TB, time = day.start }
      end
    end
  end
  return rows
end

-- Example (`tstats test`): the answers InfluxDB gives the two queries, in order, and the
-- rows they make. Max: 2,500,000 kbps = 2.5 Gbps at 12:00. Bytes: two 1-minute buckets of
-- 1,000,000 and 3,000,000 kbps (an empty one skipped) = (1e6 + 3e6) * 60 / 8 KB = 0.03 TB.
M.examples = {
  { name = "one CDN", day = "2025-12-01",
    answers = {
      { match = "SELECT max%(value%)", series = {
        { name = "bandwidth.cdn.1min", tags = { cdn = "cdn1" }, columns = { "time", "max" }, values = { { 1764590400, 2500000 } } } } },
      { match = "SELECT mean%(value%).*GROUP BY time%(1m%)", series = {
        { name = "bandwidth.cdn.1min", tags = { cdn = "cdn1" }, columns = { "time", "mean" },
          values = { { 1764547200, 1000000 }, { 1764547260 }, { 1764547320, 3000000 } } } } },
    },
    expect = {
      { cdn = "cdn1", deliveryservice = "all", stat_name = "daily_maxgbps", value = 2.5, time = 1764590400 },
      { cdn = "cdn1", deliveryservice = "all", stat_name = "daily_bytesserved", value = 0.03, time = 1764547200 },
    } },
}

return M
