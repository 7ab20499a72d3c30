-- Stock mapping for Traffic Monitor /publish/CacheStats (Lua side; the C core
-- calls M.entity once per cache hostname and M.stat once per stat name, caches
-- the answers and applies them to every sample without re-entering Lua).
-- Reproduces Traffic Stats' names and tags exactly (ATC.md 5.5) so existing
-- InfluxDB continuous queries and Grafana dashboards keep working.
local M = {}

-- A field of the TO server map only counts when it is a non-empty string:
-- cjson turns JSON null into a userdata, which must never become a tag value.
local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- Tags of one cache. ATC looks the TM cache key up in the map of ALL TO
-- servers; an unknown host keeps hostname and cdn only (ATC writes empty
-- cachegroup/type values, which its client drops: same series key).
function M.entity(name, ctx)
  -- A nameless cache cannot be told apart from any other: drop it rather
  -- than merge every such sample into one hostname-less series.
  if type(name) ~= "string" or name == "" then return nil end
  local tags = { hostname = name, cdn = str(ctx and ctx.cdn) }
  local srv = ctx and type(ctx.servers) == "table" and ctx.servers[name]
  if type(srv) == "table" then
    tags.cachegroup = str(srv.cacheGroup)
    tags.type = str(srv.type)
  end
  return tags
end

-- Go: strings.Replace(name, ".bandwidth", ".kbps", 1) and then
-- strings.Replace(name, "-", "_", -1). Plain find: "." is not a pattern here.
function M.measurement(name)
  local i, j = string.find(name, ".bandwidth", 1, true)
  if i then name = name:sub(1, i - 1) .. ".kbps" .. name:sub(j + 1) end
  return (name:gsub("-", "_"))
end

function M.stat(name, ctx) -- luacheck: ignore ctx
  if type(name) ~= "string" or name == "" then return nil end
  return { measurement = M.measurement(name), tags = nil, field = "value",
           scale = nil, as_int = false }
end

-- Examples (`tstats test` runs them; `tstats map` runs the mapping over any saved payload):
-- a known cache gets its cache group and type from Traffic Ops, an unknown one hostname
-- and cdn only; "-" becomes "_" in the measurement; a non-numeric value is skipped.
M.examples = {
  { name = "tags from Traffic Ops, ATC's measurement names", cdn = "cdn1",
    servers = { { hostName = "edge1", domainName = "example.net", cacheGroup = "cg-east", type = "EDGE", cdn = "cdn1" } },
    payload = [[{"caches":{
      "edge1":{"bandwidth":[{"value":"1500.5","time":1764547200000,"span":1}],
               "ats.proxy.process.http.current_client_connections":[{"value":"42","time":1764547200000,"span":1}],
               "ats.proxy.process.ssl.cipher.user_agent.ECDHE-RSA-AES128-GCM-SHA256":[{"value":"7","time":1764547200000,"span":1}]},
      "other-host":{"maxKbps":[{"value":"10000","time":1764547201000,"span":1}],
                    "bandwidth":[{"value":"n/a","time":1764547201000,"span":1}]}}}]],
    expect = [[
      bandwidth,cachegroup=cg-east,cdn=cdn1,hostname=edge1,type=EDGE value=1500.5 1764547200000
      ats.proxy.process.http.current_client_connections,cachegroup=cg-east,cdn=cdn1,hostname=edge1,type=EDGE value=42 1764547200000
      ats.proxy.process.ssl.cipher.user_agent.ECDHE_RSA_AES128_GCM_SHA256,cachegroup=cg-east,cdn=cdn1,hostname=edge1,type=EDGE value=7 1764547200000
      maxKbps,cdn=cdn1,hostname=other-host value=10000 1764547201000
    ]] },
}

return M
