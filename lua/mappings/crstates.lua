-- Example operator mapping for an extra endpoint (Lua side): Traffic Monitor's
-- /publish/CrStates, polled with no C change by adding to the configuration:
--   endpoints = { { name = "CrStates", path = "/publish/CrStates", format = "lua",
--                   mapping = "mappings.crstates", db = "cache_stats", rp = "daily" } }
-- format = "lua" hands the whole body to payload() once per poll (fine for a
-- small endpoint; CacheStats-sized payloads belong to the C scanner).
local tstats = require "tstats"

local M = {}

local function flag(v) return v == true and 1 or 0 end

-- Returns points: one "crstates" point per cache, one "crstates_ds" per delivery service.
function M.payload(body, ctx)
  local ok, doc = pcall(tstats.json.decode, body)
  if not ok or type(doc) ~= "table" then error("CrStates: unparsable body") end
  local now = tstats.now_ms()
  local points = {}
  for host, c in pairs(type(doc.caches) == "table" and doc.caches or {}) do
    if type(c) == "table" then
      points[#points + 1] = {
        measurement = "crstates",
        tags = { hostname = host, cdn = ctx.cdn },
        fields = { available = flag(c.isAvailable), ipv4_available = flag(c.ipv4Available),
                   ipv6_available = flag(c.ipv6Available), status = type(c.status) == "string" and c.status or nil },
        time = now,
      }
    end
  end
  for ds, d in pairs(type(doc.deliveryServices) == "table" and doc.deliveryServices or {}) do
    if type(d) == "table" then
      points[#points + 1] = {
        measurement = "crstates_ds",
        tags = { deliveryservice = ds, cdn = ctx.cdn },
        fields = { available = flag(d.isAvailable),
                   disabled_locations = type(d.disabledLocations) == "table" and #d.disabledLocations or 0 },
        time = now,
      }
    end
  end
  return points
end

-- Example (`tstats test`): the points carry the poll's time, so it is not compared.
M.examples = {
  { name = "one cache, one delivery service", format = "lua", endpoint = "CrStates", cdn = "cdn1", ignore_time = true,
    payload = [[{"caches":{"edge1":{"isAvailable":true,"ipv4Available":true,"ipv6Available":false,"status":"REPORTED - available"}},
                 "deliveryServices":{"demo1":{"isAvailable":true,"disabledLocations":["cg-west"]}}}]],
    expect = [[
      crstates,cdn=cdn1,hostname=edge1 available=1i,ipv4_available=1i,ipv6_available=0i,status="REPORTED - available" 0
      crstates_ds,cdn=cdn1,deliveryservice=demo1 available=1i,disabled_locations=1i 0
    ]] },
}

return M
