-- reimport_tm_payload.lua: example one-off operator script (Lua side, run by `tstats script`).
-- Re-imports a saved Traffic Monitor /publish/CacheStats answer through the stock mapping
-- (lua/mappings/cachestats.lua, or your override in script_dir) into InfluxDB cache_stats.
--
-- Usage:
--   tstats --config /etc/tstats/config.lua script lua/scripts/reimport_tm_payload.lua \
--       FILE.json CDN [--servers TO_SERVERS.json] [--rp RP] [--dry-run]
--   FILE.json          e.g. curl -s 'http://tm:80/publish/CacheStats?hc=1' > FILE.json
--   CDN                the cdn tag to write (TM payloads do not name their CDN)
--   --servers F        a saved `GET /api/5.0/servers` answer: adds cachegroup/type tags
--   --rp RP            retention policy (default retention.cache, "daily" = 26 h: older
--                      samples are refused by InfluxDB; use "indefinite" for old files)
--   --dry-run          print the line protocol instead of writing it
-- Exit code 0 when every point was written. Samples whose value is not a number are
-- skipped (or written as 0 when collect.non_numeric = "zero"), like the daemon does.
local tstats = require "tstats"

local function usage(msg)
  io.stderr:write((msg and (msg .. "\n") or "") .. "usage: tstats script reimport_tm_payload.lua FILE.json CDN"
    .. " [--servers TO_SERVERS.json] [--rp RP] [--dry-run]\n")
  return false
end

local args, pos = {}, {}
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--dry-run" then args.dry = true; i = i + 1
    elseif a == "--servers" or a == "--rp" then
      args[a:sub(3)] = arg[i + 1]
      if not arg[i + 1] then return usage(a .. " needs a value") end
      i = i + 2
    elseif a:sub(1, 2) == "--" then return usage("unknown option " .. a)
    else pos[#pos + 1] = a; i = i + 1 end
  end
end
local file, cdn = pos[1], pos[2]
if not file or not cdn then return usage() end

local function read_json(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local body = f:read("a")
  f:close()
  local ok, doc = pcall(tstats.json.decode, body)
  if not ok or type(doc) ~= "table" then return nil, path .. ": not JSON: " .. tostring(doc) end
  return doc
end

local doc, err = read_json(file)
if not doc then return usage(err) end
if type(doc.caches) ~= "table" then return usage(file .. ": no \"caches\" object (is it /publish/CacheStats?)") end

local servers = {}
if args.servers then
  local s, serr = read_json(args.servers)
  if not s then return usage(serr) end
  for _, srv in ipairs(type(s.response) == "table" and s.response or {}) do
    if type(srv) == "table" and type(srv.hostName) == "string" then servers[srv.hostName] = srv end
  end
end

local cfg = tstats.config
local M = require "mappings.cachestats"
local ctx = { cdn = cdn, endpoint = "CacheStats", servers = servers, config = cfg }
local zero = cfg.collect and cfg.collect.non_numeric == "zero"
local db = cfg.databases.cache
local rp = args.rp or cfg.retention.cache

local points, skipped, written, failed = {}, 0, 0, 0

local function flush()
  if #points == 0 then return end
  if args.dry then
    for _, p in ipairs(points) do
      print((tstats.line(p.measurement, p.tags, p.fields, p.time, "ms")))
    end
    written = written + #points
  else
    local n, werr = tstats.influx.write { db = db, rp = rp, precision = "ms", points = points, sync = true }
    if n then written = written + n else
      failed = failed + #points
      tstats.error("write to " .. db .. "." .. rp .. " failed: " .. tostring(werr))
    end
  end
  points = {}
end

-- Names sorted so reruns produce the same order (and the same log).
local hosts = {}
for h in pairs(doc.caches) do hosts[#hosts + 1] = h end
table.sort(hosts)
for _, host in ipairs(hosts) do
  local stats = doc.caches[host]
  local etags = type(stats) == "table" and M.entity(host, ctx) or nil
  if etags then
    local names = {}
    for s in pairs(stats) do names[#names + 1] = s end
    table.sort(names)
    for _, name in ipairs(names) do
      local spec = M.stat(name, ctx)
      local samples = stats[name]
      if spec and type(samples) == "table" then
        for _, smp in ipairs(samples) do
          local text = type(smp) == "table" and smp.value
          local t = type(smp) == "table" and math.tointeger(smp.time)
          local v = type(text) == "string" and tonumber(text) or nil
          if v == nil and zero then v = 0.0 end
          if v ~= nil and v == v and t then
            if spec.scale then v = v * spec.scale end
            if spec.sample then v = spec.sample(v, text, t, ctx) end
          end
          if v == nil or v ~= v or not t then
            skipped = skipped + 1
          else
            local tags = {}
            for k, x in pairs(etags) do tags[k] = x end
            for k, x in pairs(spec.tags or {}) do tags[k] = x end
            local value = spec.as_int and (math.tointeger(v) or math.floor(v)) or v + 0.0
            points[#points + 1] = { measurement = spec.measurement, tags = tags,
                                    fields = { [spec.field or "value"] = value }, time = t }
            if #points >= 5000 then flush() end
          end
        end
      end
    end
  end
end
flush()
tstats.info(("reimport %s: %d points %s, %d samples skipped (not numbers), %d failed"):format(file, written,
  args.dry and "printed" or ("written to " .. db .. "." .. rp), skipped, failed))
return failed == 0
