-- The one option table (Lua side): every configuration key with its type,
-- default and help. It validates config.lua (unknown key, wrong type, missing
-- required value → start-up stops naming the key and the file), resolves
-- defaults, prints `tstats check` (secrets masked) and feeds the README table.
local O = {}

local MiB = 1024 * 1024

-- type: string | integer | number | boolean | list (of strings) | table (free-form) | secret
O.list = {
  { "log.level", "string", "info", "error | warn | info | debug", enum = { "error", "warn", "info", "debug" } },
  { "log.file", "string", nil, "log file path; stderr when unset" },
  { "log.format", "string", "text", "text | json | logfmt: the form of each log line", enum = { "text", "json", "logfmt" } },

  { "traffic_ops.url", "string", nil, "Traffic Ops base URL, e.g. https://to.example.net", required = true },
  { "traffic_ops.user", "string", "admin", "Traffic Ops user" },
  { "traffic_ops.password", "secret", nil, "Traffic Ops password (use env(\"TO_PASSWORD\"))" },
  { "traffic_ops.insecure", "boolean", false, "skip TLS verification of Traffic Ops (logged as a warning)" },
  { "traffic_ops.ca_file", "string", nil, "PEM file of the CAs trusted for Traffic Ops (default: the system's)" },
  { "traffic_ops.ca_path", "string", nil, "directory of hashed CA certificates trusted for Traffic Ops" },
  { "traffic_ops.client_cert", "string", nil, "PEM client certificate presented to Traffic Ops (mutual TLS)" },
  { "traffic_ops.client_key", "string", nil, "PEM private key of traffic_ops.client_cert (default: the same file)" },
  { "traffic_ops.timeout", "number", 10, "seconds per Traffic Ops request", min = 0.1 },
  { "traffic_ops.profile", "string", "TRAFFIC_STATS", "profile whose CacheStats/DsStats parameters select the stats" },
  { "traffic_ops.status_to_monitor", "string", "ONLINE", "Traffic Monitors with this status are polled" },

  { "cdns", "list", {}, "CDN allow-list; empty = every CDN" },
  { "endpoints", "table", {}, "extra endpoints polled on every monitor (see lua/README.md)" },
  { "polling_interval", "integer", 10, "seconds between Traffic Monitor polls (aligned to the clock)", min = 1 },
  { "publishing_interval", "integer", 30, "seconds between InfluxDB writes (aligned to the clock)", min = 1 },
  { "config_interval", "integer", 300, "seconds between Traffic Ops refreshes", min = 1 },
  { "daily_summary_interval", "integer", 60, "seconds between daily summary checks", min = 1 },
  { "shutdown_timeout", "number", 10, "seconds SIGTERM may spend flushing buffered points", min = 0 },
  { "state_dir", "string", "/var/lib/tstats", "where the last good Traffic Ops data (and by default the spool) is kept" },
  { "script_dir", "string", nil, "directory whose .lua files override the embedded scripts" },

  { "collect.timeout", "number", 4, "seconds per Traffic Monitor request, then the next monitor is tried (keep it under half of polling_interval so a second monitor fits in the timeslot)", min = 0.1 },
  { "collect.connect_timeout", "number", 3, "seconds to connect to a Traffic Monitor", min = 0.1 },
  { "collect.gzip", "boolean", false, "ask Traffic Monitor for gzip (saves network, costs CPU)" },
  { "collect.max_sample_age", "integer", 86400, "samples older than this many seconds are skipped", min = 1 },
  { "collect.non_numeric", "string", "skip", "skip | zero: what to do with non-numeric values (ATC writes 0)", enum = { "skip", "zero" } },
  { "collect.max_payload_bytes", "integer", 128 * MiB, "a Traffic Monitor answer larger than this is refused (measured: ~3.9 KB per cache with the TRAFFIC_STATS stats list, ~21 KB with 200 unfiltered stats: 128 MiB holds 30,000 caches of the first kind)", min = 1024 },

  { "influxdb.urls", "list", nil, "InfluxDB 1.x base URLs (see influxdb.mode)", required = true },
  { "influxdb.mode", "string", "failover", "failover: one server at a time, back to the first healthy one | mirror: every point to every URL, each with its own queue and spool position", enum = { "failover", "mirror" } },
  { "influxdb.user", "string", nil, "InfluxDB user (basic auth)" },
  { "influxdb.password", "secret", nil, "InfluxDB password (use env(\"INFLUX_PASSWORD\"))" },
  { "influxdb.insecure", "boolean", false, "skip TLS verification of InfluxDB (logged as a warning)" },
  { "influxdb.ca_file", "string", nil, "PEM file of the CAs trusted for InfluxDB (default: the system's)" },
  { "influxdb.ca_path", "string", nil, "directory of hashed CA certificates trusted for InfluxDB" },
  { "influxdb.client_cert", "string", nil, "PEM client certificate presented to InfluxDB (mutual TLS)" },
  { "influxdb.client_key", "string", nil, "PEM private key of influxdb.client_cert (default: the same file)" },
  { "influxdb.timeout", "number", 30, "seconds per InfluxDB request", min = 0.1 },
  { "influxdb.gzip", "boolean", false, "gzip write bodies" },
  { "influxdb.max_publish_size", "integer", 10000, "points per write request", min = 1 },
  { "influxdb.max_buffer_bytes", "integer", 256 * MiB, "memory bound for pending points; oldest dropped beyond it", min = 65536 },
  { "influxdb.max_inflight", "integer", 2, "concurrent write requests", min = 1 },

  { "databases.cache", "string", "cache_stats", "database for cache stats" },
  { "databases.ds", "string", "deliveryservice_stats", "database for delivery service stats" },
  { "databases.daily", "string", "daily_stats", "database for daily summaries" },
  { "retention.cache", "string", "daily", "retention policy for raw cache stats" },
  { "retention.ds", "string", "daily", "retention policy for raw delivery service stats" },
  { "retention.daily", "string", "indefinite", "retention policy for daily summaries" },

  { "summary.enabled", "boolean", true, "compute daily summaries" },
  { "summary.sinks", "list", { "pg" }, "where summaries go besides InfluxDB: pg and/or api" },
  { "summary.rollups", "list", { "daily" }, "rollup modules (lua/rollups/<name>.lua) to run" },
  { "summary.grace", "integer", 600, "seconds after midnight UTC before a day is summarized", min = 0 },
  { "summary.max_catchup_days", "integer", 31, "most days computed after an outage", min = 1 },
  { "postgres.conninfo", "secret", nil, "libpq connection string or URI of the Traffic Ops database" },
  { "postgres.statement_timeout", "number", 10, "seconds a daily summary's PostgreSQL statement or lock wait may take (the daemon polls on meanwhile: the summary's calls yield); then it is cancelled and the day retried at the next tick; a server that does not answer within 2 s more is dropped; 0 = no server-side limit (postgres.call_timeout still bounds the wait)", min = 0 },
  { "postgres.call_timeout", "number", nil, "seconds the daily summary waits for any one PostgreSQL answer (a statement, a connect with connect_timeout=0, a host name lookup) before it cancels the statement, drops the connection and retries the day at a later tick; default statement_timeout + 2, or 30 when statement_timeout is 0", min = 0.1 },

  -- The durable spool (src/spool.c): every polled batch is on disk before it counts as accepted.
  { "spool.enabled", "boolean", true, "keep every accepted point on disk until InfluxDB has it (kill -9, outages)" },
  { "spool.dir", "string", nil, "spool directory; default <state_dir>/spool" },
  { "spool.max_bytes", "integer", 1024 * MiB, "disk the spool may use; the oldest data goes first beyond it (counted)", min = 65536 },
  { "spool.segment_bytes", "integer", 16 * MiB, "size of one spool file (at most max_bytes / 4)", min = 4096 },
  { "spool.fsync", "string", "interval", "interval | always | never: what a power loss may cost (docs/RELIABILITY.md)", enum = { "interval", "always", "never" } },
  { "spool.fsync_interval", "number", 1, "seconds between fsyncs with spool.fsync = \"interval\"", min = 0.01 },
  { "spool.replay_rate", "integer", 500000, "points per second read back from the spool (a backlog never floods InfluxDB)", min = 1000 },

  { "lua.memory_limit", "integer", 512 * MiB, "bytes the Lua heap may use", min = MiB },
  { "lua.hook_budget", "integer", 10000000, "instructions a mapping call may run", min = 1000 },
  { "lua.poll_budget_ms", "integer", 1000, "ms (wall clock) all calls of one endpoint's mapping may spend in one poll; names beyond it wait for the next poll", min = 1 },

  { "http.listen", "string", nil, "address:port of /metrics, /health, /ready and the status page; unset = off; a bare port (\"9101\") listens on 127.0.0.1" },
  { "http.user", "string", nil, "basic auth user of the HTTP listener (with http.password)" },
  { "http.password", "secret", nil, "basic auth password of the HTTP listener (use env(\"TSTATS_HTTP_PASSWORD\"))" },
  { "http.token", "secret", nil, "bearer token of the HTTP listener (use env(\"TSTATS_HTTP_TOKEN\"))" },
  { "http.health_intervals", "integer", 3, "/health fails when a CDN was not polled (or its points not written) within this many intervals", min = 1 },

  { "kafka.enabled", "boolean", false, "also export every point to Kafka (its own queue: Kafka down never holds InfluxDB back)" },
  { "kafka.brokers", "string", nil, "bootstrap brokers, \"host1:9092,host2:9092\"" },
  { "kafka.topic", "string", nil, "topic for every database not named in kafka.topics" },
  { "kafka.topics", "table", {}, "a topic per database, e.g. { cache_stats = \"cdn.cache\" }", check = "string_map" },
  { "kafka.format", "string", "json", "json (Traffic Stats' message plus db and rp) | lp (line protocol; db, rp, precision in headers)", enum = { "json", "lp" } },
  { "kafka.acks", "string", "all", "all | 1 | 0: broker acknowledgements a message waits for", enum = { "all", "1", "0" } },
  { "kafka.idempotence", "boolean", true, "idempotent producer (no duplicates from librdkafka's retries; needs acks = all)" },
  { "kafka.compression", "string", "none", "none | gzip | snappy | lz4 | zstd", enum = { "none", "gzip", "snappy", "lz4", "zstd" } },
  { "kafka.properties", "table", {}, "librdkafka properties passed through: security.protocol, sasl.*, ssl.*, message.timeout.ms, ...", check = "property_map" },
  { "kafka.points_per_message", "integer", 1, "1: one message per point (Traffic Stats); N: up to N points of one partition per message, one per line (far less CPU)", min = 1 },
  { "kafka.max_buffer_bytes", "integer", 256 * MiB, "memory bound for points not yet handed to librdkafka; oldest dropped beyond it", min = 65536 },
  { "kafka.retry_backoff", "number", 1, "seconds before a message librdkafka gave up on (brokers down) is produced again", min = 0.01 },

  -- custom derived metrics (lua/metrics.lua, computed in C by src/derive.c)
  { "metrics", "table", {}, "derived metrics: definitions and names of lua/metrics/ modules (see lua/README.md)" },
}

-- Checks of free-form tables, named in an option's `check`.
local checks = {}
function checks.string_map(v)
  for k, x in pairs(v) do
    if type(k) ~= "string" then return "keys must be strings" end
    if type(x) ~= "string" or x == "" then return ("[%q] must be a non-empty string"):format(k) end
  end
end
-- librdkafka properties a kafka.* option sets (src/kafka_conf.c refuses them too)
local owned = {
  ["bootstrap.servers"] = "kafka.brokers", ["metadata.broker.list"] = "kafka.brokers", acks = "kafka.acks",
  ["request.required.acks"] = "kafka.acks", ["enable.idempotence"] = "kafka.idempotence",
  ["compression.codec"] = "kafka.compression", ["compression.type"] = "kafka.compression",
  partitioner = "nothing: tstats partitions by series key with murmur2",
}
function checks.property_map(v)
  for k, x in pairs(v) do
    if type(k) ~= "string" then return "keys must be strings (librdkafka property names)" end
    if owned[k] then return ("[%q]: set %s instead"):format(k, owned[k]) end
    local t = type(x)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      return ("[%q] must be a string, a number or a boolean"):format(k)
    end
  end
end

local by_key, sections = {}, {}
for _, o in ipairs(O.list) do
  local d = { key = o[1], type = o[2], default = o[3], help = o[4], enum = o.enum, min = o.min, required = o.required,
              check = o.check }
  by_key[d.key] = d
  local sec = d.key:match("^([^.]+)%.")
  if sec then sections[sec] = true end
end
O.by_key = by_key

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deepcopy(x) end
  return t
end

local function suggest(key)
  local best, bestd
  for k in pairs(by_key) do
    -- cheap similarity: shared prefix length, then length difference
    local n = 0
    while n < #k and n < #key and k:sub(n + 1, n + 1) == key:sub(n + 1, n + 1) do n = n + 1 end
    local d = (#key - n) + (#k - n)
    if not bestd or d < bestd then best, bestd = k, d end
  end
  if bestd and bestd <= 6 then return best end
end

local function check_value(d, v)
  local t = d.type
  if t == "secret" or t == "string" then
    if type(v) ~= "string" then return "must be a string" end
    if d.enum then
      for _, e in ipairs(d.enum) do if e == v then return nil end end
      return "must be one of " .. table.concat(d.enum, ", ")
    end
  elseif t == "integer" then
    if math.type(v) ~= "integer" then
      if type(v) == "number" and v == math.floor(v) then return nil end
      return "must be an integer"
    end
  elseif t == "number" then
    if type(v) ~= "number" then return "must be a number" end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return "must be true or false" end
  elseif t == "list" then
    if type(v) ~= "table" then return "must be a list of strings" end
    for i, x in ipairs(v) do if type(x) ~= "string" then return ("item %d must be a string"):format(i) end end
    for k in pairs(v) do if math.type(k) ~= "integer" then return "must be a list (no named keys)" end end
  elseif t == "table" then
    if type(v) ~= "table" then return "must be a table" end
  end
  if d.min and type(v) == "number" and v < d.min then return ("must be at least %s"):format(d.min) end
  if d.check then return checks[d.check](v) end
end

-- Resolve a user table: returns cfg, or nil and a list of error strings.
function O.resolve(user, file)
  local errs, cfg = {}, {}
  file = file or "config"
  local function err(key, msg) errs[#errs + 1] = ("%s: '%s' %s"):format(file, key, msg) end
  if type(user) ~= "table" then return nil, { file .. ": must return a table" } end
  local function walk(t, prefix)
    for k, v in pairs(t) do
      if type(k) ~= "string" then
        err(prefix .. tostring(k), "is not a valid key")
      else
        local key = prefix .. k
        local d = by_key[key]
        if d then
          local m = check_value(d, v)
          if m then err(key, m) end
        elseif sections[key] and type(v) == "table" then
          walk(v, key .. ".")
        else
          local s = suggest(key)
          err(key, "is not a known option" .. (s and (" (did you mean '" .. s .. "'?)") or ""))
        end
      end
    end
  end
  walk(user, "")
  for _, o in ipairs(O.list) do
    local key = o[1]
    local d = by_key[key]
    local sec, name = key:match("^([^.]+)%.(.+)$")
    local v
    if sec then
      if type(user[sec]) == "table" then v = user[sec][name] end   -- `false` must survive: no and/or here
    else
      v = user[key]
    end
    if v == nil then v = deepcopy(d.default) end
    if d.type == "integer" and type(v) == "number" then v = math.tointeger(v) or v end
    if v == nil and d.required then err(key, "is required") end
    -- a required list means at least one item (influxdb.urls = {} would leave the writer nowhere to go)
    if d.required and d.type == "list" and type(v) == "table" and #v == 0 then err(key, "must list at least one value") end
    if sec then
      cfg[sec] = cfg[sec] or {}
      cfg[sec][name] = v
    else
      cfg[key] = v
    end
  end
  if #errs == 0 then
    -- what only fails at run time (URL schemes, sinks, rollups, endpoint entries)
    local ok, V = pcall(require, "validate")
    if ok then
      for _, p in ipairs(V.config(cfg)) do err(p[1], p[2]) end
    end
  end
  if #errs > 0 then table.sort(errs); return nil, errs end
  return cfg
end

-- The environment config files run in: the standard library plus env().
local function config_env()
  local env = {}
  for k, v in pairs(_G) do env[k] = v end
  env.env = function(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return v
  end
  -- metric { ... }: a derived-metric definition that remembers its file:line
  env.metric = function(t)
    local info = debug.getinfo(2, "Sl")
    if type(t) == "table" and info and info.currentline > 0 then
      rawset(t, "__where", (info.source:match("^@(.*)") or info.short_src) .. ":" .. info.currentline)
    end
    return t
  end
  return env
end

-- A file that holds a secret in clear must not be readable by anyone but its
-- owner: warn (at every load: start, reload, check) naming the keys and mode.
function O.warn_readable_secrets(path, cfg)
  local f = io.open(path, "rb")
  local text = f and f:read("a")
  if f then f:close() end
  if not text then return end
  local held = {}
  for _, o in ipairs(O.list) do
    if o[2] == "secret" then
      local sec, name = o[1]:match("^([^.]+)%.(.+)$")
      local v
      if sec then v = type(cfg[sec]) == "table" and cfg[sec][name] or nil else v = cfg[o[1]] end
      if type(v) == "string" and v ~= "" and text:find(v, 1, true) then held[#held + 1] = o[1] end
    end
  end
  if #held == 0 then return end
  local p = io.popen("stat -c %a -- '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
  local mode = p and p:read("l")
  if p then p:close() end
  mode = tonumber(mode or "", 8)
  if not mode or mode & 36 == 0 then return end   -- 036 octal: group or other may read
  local msg = ("%s holds %s in clear and is readable by others (mode %03o): chmod 600 it, or use env(\"...\")")
    :format(path, table.concat(held, ", "), mode)
  local ts = rawget(_G, "tstats")
  if type(ts) == "table" and type(ts.warn) == "function" then ts.warn(msg) else io.stderr:write("warning: ", msg, "\n") end
  return msg
end

-- Load and resolve a config file (path), or the embedded default when path is nil.
function O.load(path)
  local chunk, lerr
  if path then
    chunk, lerr = loadfile(path, "t", config_env())
  else
    local src = O.embedded_default and O.embedded_default() or nil
    if not src then return nil, { "no embedded default configuration" } end
    chunk, lerr = load(src, "@[tstats]/config.lua", "t", config_env())
  end
  if not chunk then return nil, { lerr } end
  local ok, user = pcall(chunk)
  if not ok then return nil, { tostring(user) } end
  local cfg, errs = O.resolve(user, path or "[embedded]config.lua")
  if cfg and path then O.warn_readable_secrets(path, cfg) end
  return cfg, errs
end

-- A secret is never shown, whatever its value: a URL keeps its scheme and
-- host (after the last '@': a password may hold '@' or ':'), nothing else.
local function mask(key, v)
  if v == nil then return v end
  local d = by_key[key]
  if not (d and d.type == "secret") then return v end
  if type(v) == "string" then
    local scheme, rest = v:match("^(%a[%w+.-]*://)(.*)$")
    if scheme then
      local host = rest:match("^.*@(.*)$") or rest
      host = host:match("^([^/?#]*)") or ""
      if host ~= "" then return scheme .. "****@" .. host .. "/****" end
    end
  end
  return "****"
end
O.mask = mask

local function show(v)
  if type(v) == "table" then
    local parts = {}
    for _, x in ipairs(v) do parts[#parts + 1] = show(x) end
    if #parts == 0 and next(v) ~= nil then return "{...}" end
    return "{" .. table.concat(parts, ", ") .. "}"
  elseif type(v) == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end

-- Lines "key = value" for `tstats check`, secrets masked.
function O.dump(cfg)
  local out = {}
  for _, o in ipairs(O.list) do
    local key = o[1]
    local sec, name = key:match("^([^.]+)%.(.+)$")
    local v = sec and cfg[sec] and cfg[sec][name] or (not sec and cfg[key]) or nil
    if sec and cfg[sec] and cfg[sec][name] == false then v = false end
    if not sec and cfg[key] == false then v = false end
    out[#out + 1] = ("%-32s = %s"):format(key, v == nil and "(unset)" or show(mask(key, v)))
  end
  return table.concat(out, "\n")
end

function O.show_default(d)
  return d.default == nil and (d.required and "required" or "unset") or show(d.default)
end

-- Markdown table for the README.
function O.markdown()
  local out = { "| key | type | default | meaning |", "|---|---|---|---|" }
  for _, o in ipairs(O.list) do
    local d = by_key[o[1]]
    local def = O.show_default(d)
    out[#out + 1] = ("| `%s` | %s | `%s` | %s |"):format(d.key, d.type, def, d.help:gsub("|", "\\|"))
  end
  return table.concat(out, "\n")
end

return O
