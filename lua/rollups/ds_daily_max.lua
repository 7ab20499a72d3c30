-- Example extra rollup (Lua side, run by lua/summary.lua; OFF by default): the daily
-- maximum bandwidth of every delivery service, in kbps, with the time of the maximum.
-- Enable it with summary = { rollups = { "daily", "ds_daily_max" } } in config.lua.
-- It exists to show the rollup contract (lua/rollups/README.md) on a second data
-- source; copy it into script_dir under another name to write your own.
local M = {
  name = "ds_daily_max",
  stats = { "daily_ds_maxkbps" },
}

-- Where the numbers come from. "1min" (default) takes max() of the 1-minute
-- series; "1day" reads what the max_kbps_ds_1day continuous query stored, which
-- is only final two days later (the CQ resamples FOR 2d) and may miss the last
-- minutes of the day when it ran at 00:00 before the 1-minute CQ caught up.
M.source = "1min"

function M.compute(day, ctx)
  local cfg = ctx.config or {}
  local db = (cfg.databases and cfg.databases.ds) or "deliveryservice_stats"
  local q
  if M.source == "1day" then
    -- The CQ stamps each day's max at 00:00 of that day; its own time is lost.
    q = ("SELECT max(value) FROM %s.\"indefinite\".\"max.kbps.ds.1day\" WHERE time >= '%s' AND time < '%s'%s"
         .. " GROUP BY deliveryservice, cdn"):format(ctx.ident(db), ctx.rfc3339(day.start),
         ctx.rfc3339(day.stop), ctx.cdn_where)
  else
    q = ("SELECT max(value) FROM %s.\"monthly\".\"kbps.ds.1min\" WHERE time >= '%s' AND time < '%s'%s"
         .. " GROUP BY deliveryservice, cdn"):format(ctx.ident(db), ctx.rfc3339(day.start),
         ctx.rfc3339(day.stop), ctx.cdn_where)
  end
  local series, err = ctx.query(q, db)
  if not series then return nil, "ds_daily_max query: " .. tostring(err) end
  local rows = {}
  for _, s in ipairs(series) do
    local tags = s.tags or {}
    local v = s.values and s.values[1]
    if type(tags.deliveryservice) == "string" and tags.deliveryservice ~= "" and v and type(v[2]) == "number" then
      rows[#rows + 1] = {
        cdn = (type(tags.cdn) == "string" and tags.cdn ~= "") and tags.cdn or "all",
        deliveryservice = tags.deliveryservice,
        stat_name = "daily_ds_maxkbps",
        value = v[2] + 0.0,
        time = math.tointeger(v[1]) or day.start,
      }
    end
  end
  return rows
end

-- Example (`tstats test`): one delivery service's maximum with the time it happened;
-- a series without a delivery service tag makes no row.
M.examples = {
  { name = "max per delivery service", day = "2025-12-01",
    answers = {
      { match = "GROUP BY deliveryservice, cdn", series = {
        { name = "kbps.ds.1min", tags = { deliveryservice = "demo1", cdn = "cdn1" }, columns = { "time", "max" }, values = { { 1764590460, 8123.5 } } },
        { name = "kbps.ds.1min", tags = { deliveryservice = "", cdn = "cdn1" }, columns = { "time", "max" }, values = { { 1764590460, 1 } } } } },
    },
    expect = {
      { cdn = "cdn1", deliveryservice = "demo1", stat_name = "daily_ds_maxkbps", value = 8123.5, time = 1764590460 },
    } },
}

return M
