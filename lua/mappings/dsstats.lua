-- Stock mapping for Traffic Monitor /publish/DsStats (Lua side; called once
-- per delivery service and once per stat key, answers cached by the C core).
-- Names and tags match Traffic Stats (ATC.md 5.5), but keys are parsed from
-- the right so cache groups containing dots or the words "type"/"total" are
-- classified correctly, where ATC's split(".") misparses them.
local M = {}

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- TM adds an extra "location." in front of these two stats under every
-- prefix (location.location.<cg>.isAvailable, location.type.EDGE.isAvailable,
-- location.total.error-string): dsdata/stat.go addStatCacheStats. They are the
-- ONLY stats that get the quirk, and their values are "true"/"false"/error
-- text, never numbers, so every prefixed key ending in one of them is dropped.
-- Deciding by the stat name (not by "location.location." etc.) keeps real
-- cache groups named "location.x", "type.x" or "total.x" intact.
local QUIRK = { isAvailable = true, ["error-string"] = true }

-- Counters/logs go through the C core when it is there; specs run without it.
-- Plain global read: a mapping sandbox may have no _G.
local function note(counter, msg)
  local ts = tstats -- luacheck: ignore 113
  if type(ts) ~= "table" then return end
  if type(ts.count) == "function" then pcall(ts.count, counter, 1) end
  if type(ts.warn) == "function" then pcall(ts.warn, msg) end
end

function M.entity(name, ctx)
  -- XMLIDs are never empty; a nameless DS would pollute every DS's totals.
  if type(name) ~= "string" or name == "" then return nil end
  return { deliveryservice = name, cdn = str(ctx and ctx.cdn) }
end

-- Returns measurement, tags for a DsStats key, or nil when the key is not
-- written (unprefixed common stats, quirk keys, malformed keys).
function M.parse(key)
  if type(key) ~= "string" then return nil end
  local prefix, stat = key:match("^(.*)%.([^.]*)$")
  -- No dot: caches-configured, status, disabledLocations, ... (ATC would index
  -- s[1] out of range and panic on these; they only arrive unfiltered).
  if not prefix or stat == "" or QUIRK[stat] then return nil end
  if prefix == "total" then
    return stat, { cachegroup = "total" }
  end
  local t = prefix:match("^type%.(.+)$")
  if t then
    return stat, { cachegroup = "all", type = t }
  end
  local cg = prefix:match("^location%.(.+)$")
  if cg then
    -- A cache group literally named "total" would land in the very series of
    -- the DS totals (same tags, same timestamp) and overwrite them; the
    -- kbps.ds.1min CQ and TO's deliveryservice_stats read that series.
    if cg == "total" then
      note("mapping_dsstats_cachegroup_total",
           "dsstats: cache group named 'total' collides with the DS totals, dropping " .. key)
      return nil
    end
    return stat, { cachegroup = cg }
  end
  return nil
end

function M.stat(name, ctx) -- luacheck: ignore ctx
  local meas, tags = M.parse(name)
  if not meas then return nil end
  -- Measurement is the raw stat (ATC does no "-" -> "_" for DS stats).
  return { measurement = meas, tags = tags, field = "value", scale = nil, as_int = false }
end

-- Examples (`tstats test`): totals, per type and per (dotted) cache group; unprefixed
-- keys and TM's location.location.<cg>.isAvailable quirk are not written.
M.examples = {
  { name = "total, type and dotted cache group keys", cdn = "cdn1",
    payload = [[{"deliveryService":{"demo1":{
      "total.kbps":[{"value":"1234.5","time":1764547200000}],
      "type.EDGE.tps_total":[{"value":"12","time":1764547200000}],
      "location.us.east-1.kbps":[{"value":"99","time":1764547200000}],
      "status":[{"value":"REPORTED","time":1764547200000}],
      "location.location.us.east-1.isAvailable":[{"value":"true","time":1764547200000}]}}}]],
    expect = [[
      kbps,cachegroup=total,cdn=cdn1,deliveryservice=demo1 value=1234.5 1764547200000
      tps_total,cachegroup=all,cdn=cdn1,deliveryservice=demo1,type=EDGE value=12 1764547200000
      kbps,cachegroup=us.east-1,cdn=cdn1,deliveryservice=demo1 value=99 1764547200000
    ]] },
}

return M
