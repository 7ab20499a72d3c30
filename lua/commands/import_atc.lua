-- `tstats import-atc FILE` (Lua side): converts an ATC Traffic Stats JSON
-- config (traffic_stats.cfg) into a commented tstats config.lua. Secrets become
-- env("...") references unless --secrets-in-clear; every key that has no tstats
-- equivalent is reported by name with the reason. Exit 0 (warnings allowed),
-- 1 when the file is unreadable, not JSON, or lacks what tstats requires.
local M = {}

M.name = "import-atc"
M.summary = "convert ATC's traffic_stats.cfg (JSON) into a commented config.lua"
M.usage = [[
usage: tstats import-atc FILE [--out CONFIG.lua] [--force] [--secrets-in-clear]

Reads an ATC Traffic Stats config (JSON) and writes the equivalent tstats
config.lua (to stdout, or to --out; an existing file is kept unless --force).
Passwords become env("TO_PASSWORD") / env("INFLUX_PASSWORD"); the variables to
set are printed. --secrets-in-clear copies them into the file instead (mode 0600).
Every ATC key without an equivalent is reported on stderr with the reason.
Exit 0 on success (with warnings), 1 on an unreadable or invalid file.]]
M.options = { out = "value", force = "flag", ["secrets-in-clear"] = "flag" }

-- Every key ATC's config struct knows (unknown keys are reported as such).
local KNOWN = {
  toUser = 1, toPasswd = 1, toUrl = 1, toRequestTimeout = 1, disableInflux = 1, influxUser = 1,
  influxPassword = 1, influxUrls = 1, pollingInterval = 1, dailySummaryPollingInterval = 1,
  publishingInterval = 1, configInterval = 1, maxPublishSize = 1, statusToMon = 1, seelogConfig = 1,
  logs = 1, cacheRetentionPolicy = 1, dsRetentionPolicy = 1, dailySummaryRetentionPolicy = 1, kafkaConfig = 1,
}
local KAFKA_KEYS = { "enable", "brokers", "topic", "requiredAcks", "enableTls", "rootCA", "clientCert", "clientCertKey" }

local function lua_str(s) return (string.format("%q", s):gsub("\\\n", "\\n")) end

-- The converter proper, without I/O: doc (decoded JSON) -> text, report, env
-- where report = { {level = "warn"|"info", key =, msg =}, ... } and env lists the
-- environment variables the file reads.
function M.convert(doc, opts)
  opts = opts or {}
  local null = opts.null
  local report, envs = {}, {}
  local function warn(key, msg) report[#report + 1] = { level = "warn", key = key, msg = msg } end
  local function info(key, msg) report[#report + 1] = { level = "info", key = key, msg = msg } end
  local function val(k)
    local v = doc[k]
    if v == null then return nil end
    return v
  end
  -- ATC's ints: JSON numbers; a string that holds a number (as ATC's Ansible
  -- template renders toRequestTimeout) is taken, with a warning, since ATC
  -- itself would refuse to start on it.
  local function int(k)
    local v = val(k)
    if v == nil then return nil end
    if type(v) == "string" then
      local n = tonumber(v)
      if not n or n ~= math.floor(n) then return nil, ("'%s' is not an integer (\"%s\")"):format(k, v) end
      warn(k, ("is the string \"%s\"; taken as the number %d (ATC would fail to start on a string)"):format(v, n))
      v = n
    end
    if type(v) ~= "number" or v ~= math.floor(v) then return nil, ("'%s' must be an integer"):format(k) end
    return math.tointeger(v)
  end
  local function str(k)
    local v = val(k)
    if v == nil then return nil end
    if type(v) ~= "string" then return nil, ("'%s' must be a string"):format(k) end
    return v
  end
  local function bool(k)
    local v = val(k)
    if v == nil then return nil end
    if type(v) ~= "boolean" then return nil, ("'%s' must be true or false"):format(k) end
    return v
  end
  local errs = {}
  local function get(fn, k)
    local v, e = fn(k)
    if e then errs[#errs + 1] = e end
    return v
  end

  local unknown = {}
  for k in pairs(doc) do
    if type(k) ~= "string" or not KNOWN[k] then unknown[#unknown + 1] = tostring(k) end
  end
  table.sort(unknown)
  for _, k in ipairs(unknown) do
    warn(k, "is not a key ATC's Traffic Stats knows (ATC ignores it); not mapped")
  end

  local o = {}   -- output sections: list of {comment=, lines={...}}
  local function section(title) local s = { title = title, lines = {} }; o[#o + 1] = s; return s end
  local function line(s, key, value, comment)
    s.lines[#s.lines + 1] = { key = key, value = value, comment = comment }
  end

  -- Traffic Ops
  local to = section("traffic_ops")
  local to_url = get(str, "toUrl")
  if not to_url or to_url == "" then errs[#errs + 1] = "'toUrl' is missing: tstats needs the Traffic Ops URL" end
  line(to, "url", lua_str(to_url or ""), "toUrl")
  local to_user = get(str, "toUser")
  if to_user then line(to, "user", lua_str(to_user), "toUser")
  else info("toUser", "missing; tstats' default user \"admin\" applies") end
  local to_pass = get(str, "toPasswd")
  if to_pass ~= nil then
    if opts.secrets_in_clear then
      line(to, "password", lua_str(to_pass), "toPasswd, copied in clear (--secrets-in-clear)")
    else
      line(to, "password", 'env("TO_PASSWORD")', "toPasswd: set TO_PASSWORD in tstats' environment")
      envs[#envs + 1] = { name = "TO_PASSWORD", from = "toPasswd", empty = to_pass == "" }
    end
  else
    info("toPasswd", "missing; no Traffic Ops password configured")
  end
  local tmo = get(int, "toRequestTimeout")
  if tmo == nil then
    info("toRequestTimeout", "missing; ATC's default 10 s applies")
    tmo = 10
  elseif tmo <= 0 then
    info("toRequestTimeout", ("is %d; ATC turns <= 0 into 10 s"):format(tmo))
    tmo = 10
  end
  line(to, "timeout", tostring(tmo), "toRequestTimeout (seconds)")
  local st = get(str, "statusToMon")
  if st == nil or st == "" then
    warn("statusToMon", "missing or empty: ATC would poll no Traffic Monitor; tstats' default \"ONLINE\" is written")
    st = "ONLINE"
  end
  line(to, "status_to_monitor", lua_str(st), "statusToMon")
  line(to, "insecure", "false",
    "ATC never verified Traffic Ops' certificate; tstats does. A private CA: set ca_file (or ca_path)")
  if to_url and to_url:match("^https://") then
    info("toUrl", "is https: ATC skipped certificate verification, tstats verifies it (set traffic_ops.ca_file " ..
      "for a private CA, or traffic_ops.insecure = true, which is logged as a warning at every start)")
  end

  -- InfluxDB
  local influx = section("influxdb")
  local disable = get(bool, "disableInflux")
  local urls = val("influxUrls")
  local kept = {}
  if urls ~= nil then
    if type(urls) ~= "table" then
      errs[#errs + 1] = "'influxUrls' must be a list of URLs"
    else
      for i, u in ipairs(urls) do
        if type(u) ~= "string" then
          errs[#errs + 1] = ("'influxUrls' item %d is not a string"):format(i)
        elseif u:match("^udp://") then
          warn("influxUrls", ("'%s': UDP is not supported by tstats (ATC's UDP writes ignore database and " ..
            "retention policy and cannot run the daily summary queries); not mapped"):format(u))
        elseif u:match("^https?://") then
          local clean = u:gsub("^(https?://)[^/@]*@", "%1")
          if clean ~= u then warn("influxUrls", "credentials in a URL are not copied; use influxUser/influxdb.password") end
          kept[#kept + 1] = clean
        else
          errs[#errs + 1] = ("'influxUrls' item %d '%s' is not an http(s) URL"):format(i, u)
        end
      end
    end
  end
  if #kept == 0 then
    if disable then
      warn("disableInflux", "is true: tstats always writes InfluxDB; a placeholder URL "
        .. "http://127.0.0.1:8086 is written and daily summaries are disabled as in ATC")
      kept[1] = "http://127.0.0.1:8086"
    else
      errs[#errs + 1] = "No InfluxDB urls provided in influxUrls, please provide at least one valid URL"
    end
  elseif disable then
    warn("disableInflux", "is true: tstats has no switch to stop InfluxDB writes; not mapped " ..
      "(daily summaries are disabled as in ATC)")
  end
  local ul = {}
  for _, u in ipairs(kept) do ul[#ul + 1] = lua_str(u) end
  line(influx, "urls", "{ " .. table.concat(ul, ", ") .. " }", "influxUrls (writes fail over between them)")
  local iu = get(str, "influxUser")
  if iu and iu ~= "" then line(influx, "user", lua_str(iu), "influxUser") end
  local ip = get(str, "influxPassword")
  if ip ~= nil and iu and iu ~= "" then
    if opts.secrets_in_clear then
      line(influx, "password", lua_str(ip), "influxPassword, copied in clear (--secrets-in-clear)")
    else
      line(influx, "password", 'env("INFLUX_PASSWORD")', "influxPassword: set INFLUX_PASSWORD in tstats' environment")
      envs[#envs + 1] = { name = "INFLUX_PASSWORD", from = "influxPassword", empty = ip == "" }
    end
  elseif ip ~= nil and ip ~= "" then
    warn("influxPassword", "is set but influxUser is empty: ATC sends no credentials then; not mapped")
  end
  local mps = get(int, "maxPublishSize")
  if mps == nil or mps <= 0 then mps = 10000 end
  line(influx, "max_publish_size", tostring(mps), "maxPublishSize (points per write request)")

  -- intervals
  local top = section(nil)
  local function interval(k, key, def)
    local v = get(int, k)
    if v == nil then info(k, ("missing; ATC's default %d s applies"):format(def)); v = def
    elseif v <= 0 then info(k, ("is %d; ATC turns it into %d s"):format(v, def)); v = def end
    line(top, key, tostring(v), k .. " (seconds)")
  end
  interval("pollingInterval", "polling_interval", 10)
  interval("publishingInterval", "publishing_interval", 30)
  interval("configInterval", "config_interval", 300)
  interval("dailySummaryPollingInterval", "daily_summary_interval", 60)

  -- retention policies
  local ret = section("retention")
  local function rp(k, key, def)
    local v = get(str, k)
    if v == nil then info(k, ("missing; \"%s\" (as ATC's sample config) is written"):format(def)); v = def end
    line(ret, key, lua_str(v), k .. (v == "" and " (empty: the database's default policy)" or ""))
  end
  rp("cacheRetentionPolicy", "cache", "daily")
  rp("dsRetentionPolicy", "ds", "daily")
  rp("dailySummaryRetentionPolicy", "daily", "indefinite")

  -- daily summaries: ATC posts them to Traffic Ops' API
  local sum = section("summary")
  line(sum, "enabled", disable and "false" or "true", "ATC computes them unless disableInflux")
  line(sum, "sinks", '{ "api" }', "ATC posts stats_summary through the Traffic Ops API")

  -- collection: ATC wrote non-numeric stats as 0
  local col = section("collect")
  line(col, "non_numeric", lua_str("skip"),
    "ATC wrote non-numeric stats as 0; \"zero\" does the same, \"skip\" leaves them out")
  line(col, "max_sample_age", "86400", "ATC skipped samples older than 24 h")

  -- logging
  local lg = section("log")
  local logs = val("logs")
  if logs ~= nil then
    if type(logs) ~= "table" then
      errs[#errs + 1] = "'logs' must be an object"
    else
      local on, dests = {}, {}
      for _, lv in ipairs({ "error", "warning", "info", "debug", "event" }) do
        local d = logs[lv]
        if d == null then d = nil end
        if d ~= nil and type(d) ~= "string" then
          errs[#errs + 1] = ("'logs.%s' must be a string"):format(lv)
        elseif d and d ~= "" and d ~= "/dev/null" then
          on[lv] = true
          dests[d] = (dests[d] or 0) + 1
        end
      end
      for k in pairs(logs) do
        if not ({ error = 1, warning = 1, info = 1, debug = 1, event = 1 })[k] then
          warn("logs." .. tostring(k), "is not a log ATC knows; not mapped")
        end
      end
      local level = on.debug and "debug" or (on.info or on.event) and "info" or on.warning and "warn" or "error"
      if on.event and not on.info then
        info("logs.event", "tstats has no separate event log; its events are info lines (log.level = \"info\")")
      end
      local files, n = {}, 0
      for d in pairs(dests) do
        n = n + 1
        if d ~= "stdout" and d ~= "stderr" then files[#files + 1] = d end
      end
      table.sort(files)
      line(lg, "level", lua_str(level), "the most verbose of ATC's enabled logs")
      if #files >= 1 then
        line(lg, "file", lua_str(files[1]), "logs.* file")
        if not files[1]:match("^/var/lib/tstats/") then
          info("logs", ("%s: the packaged systemd unit writes only under /var/lib/tstats; there, leave log.file "
            .. "unset (the journal) or move it"):format(files[1]))
        end
        if n > 1 then
          warn("logs", ("ATC writes its logs to %d destinations; tstats logs to one file (%s)"):format(n, files[1]))
        end
      elseif dests.stdout then
        info("logs", "\"stdout\": tstats logs to stderr (journald and redirections capture both)")
      end
      if not next(on) then
        warn("logs", "every log is off; tstats always logs errors")
      end
    end
  elseif val("seelogConfig") ~= nil then
    warn("seelogConfig", "seelog XML is not read by tstats; set log.level / log.file (stderr meanwhile)")
    line(lg, "level", lua_str("info"), "ATC's default: error, warning, info and event to stderr")
  else
    line(lg, "level", lua_str("info"), "ATC's default: error, warning, info and event to stderr")
  end
  if logs ~= nil and val("seelogConfig") ~= nil then
    info("seelogConfig", "ignored, as ATC does when logs is present")
  end

  -- Kafka: mapped onto kafka.* when this build has them.
  local kc = val("kafkaConfig")
  if kc ~= nil then
    if type(kc) ~= "table" then
      errs[#errs + 1] = "'kafkaConfig' must be an object"
    else
      M.map_kafka(kc, section("kafka"), line, warn, info, null, opts.options)
    end
  end

  local text = M.render(o, doc)
  return text, report, envs, errs
end

-- kafkaConfig -> kafka.* (when this build has them; every key without a
-- target is reported by name). ATC's TLS files become librdkafka properties.
function M.map_kafka(kc, sec, line, warn, info, null, options)
  local by_key = (options or require "options").by_key
  local function has(k) return by_key["kafka." .. k] ~= nil end
  local function v(k) local x = kc[k]; if x == null then return nil end; return x end
  local function q(x) return lua_str(x) end
  local unknown = {}
  for k in pairs(kc) do
    local known = false
    for _, n in ipairs(KAFKA_KEYS) do if n == k then known = true end end
    if not known then unknown[#unknown + 1] = tostring(k) end
  end
  table.sort(unknown)
  for _, k in ipairs(unknown) do warn("kafkaConfig." .. k, "is not a kafkaConfig key ATC knows; not mapped") end
  if not has("enabled") then
    for _, k in ipairs(KAFKA_KEYS) do
      if kc[k] ~= nil then warn("kafkaConfig." .. k, "not mapped yet: this tstats build has no Kafka export options") end
    end
    return
  end
  local function put(key, value, from, comment)
    if has(key) then line(sec, key, value, "kafkaConfig." .. from .. (comment and (": " .. comment) or ""))
    else warn("kafkaConfig." .. from, "not mapped yet: no option kafka." .. key .. " in this build") end
  end
  local enable = v("enable") == true
  put("enabled", tostring(enable), "enable")
  local brokers = v("brokers")
  if type(brokers) == "string" and brokers ~= "" then
    local d = by_key["kafka.brokers"]
    if d and d.type == "list" then
      local parts = {}
      for b in brokers:gmatch("[^,%s]+") do parts[#parts + 1] = q(b) end
      put("brokers", "{ " .. table.concat(parts, ", ") .. " }", "brokers")
    else
      put("brokers", q((brokers:gsub("%s+", ""))), "brokers")
    end
  elseif enable then
    warn("kafkaConfig.brokers", "missing while Kafka is enabled: set kafka.brokers")
  end
  if type(v("topic")) == "string" and v("topic") ~= "" then put("topic", q(v("topic")), "topic") end
  local acks = v("requiredAcks")
  if acks ~= nil then
    local name = ({ [0] = "0", [1] = "1", [-1] = "all" })[math.tointeger(acks) or 99]
    if not name then
      warn("kafkaConfig.requiredAcks", ("is %s; ATC knows 0, 1 and -1; not mapped"):format(tostring(acks)))
    else
      put("acks", q(name), "requiredAcks", acks == -1 and "all replicas" or nil)
      if name ~= "all" and has("idempotence") then
        line(sec, "idempotence", "false", "the idempotent producer needs acks = \"all\" (ATC's requiredAcks was "
          .. tostring(math.tointeger(acks)) .. ")")
        info("kafkaConfig.requiredAcks", "is not -1 (all): the idempotent producer is off; acks = \"all\" is safer")
      end
    end
  end
  if has("format") then line(sec, "format", q("json"), "ATC's message shape (tstats adds db and rp)") end
  local props = {}
  if v("enableTls") == true then
    props[#props + 1] = { "security.protocol", "ssl" }
    local ca, cert, key = v("rootCA"), v("clientCert"), v("clientCertKey")
    if type(ca) == "string" and ca ~= "" then props[#props + 1] = { "ssl.ca.location", ca } end
    local has_cert, has_key = type(cert) == "string" and cert ~= "", type(key) == "string" and key ~= ""
    if has_cert and has_key then
      props[#props + 1] = { "ssl.certificate.location", cert }
      props[#props + 1] = { "ssl.key.location", key }
    elseif has_cert or has_key then
      warn(has_cert and "kafkaConfig.clientCert" or "kafkaConfig.clientCertKey",
        "is set without its pair: ATC disabled Kafka on that; not mapped")
    end
  else
    for _, k in ipairs({ "rootCA", "clientCert", "clientCertKey" }) do
      if type(v(k)) == "string" and v(k) ~= "" then info("kafkaConfig." .. k, "ignored: enableTls is false (as in ATC)") end
    end
  end
  if #props > 0 then
    if has("properties") then
      local parts = {}
      for _, p in ipairs(props) do parts[#parts + 1] = ("[%s] = %s"):format(q(p[1]), q(p[2])) end
      line(sec, "properties", "{ " .. table.concat(parts, ", ") .. " }",
        "kafkaConfig.enableTls, rootCA, clientCert, clientCertKey as librdkafka properties")
    else
      warn("kafkaConfig.enableTls", "not mapped yet: no option kafka.properties in this build")
    end
  end
end

function M.render(sections, _)
  local out = {
    "-- tstats configuration converted from ATC's traffic_stats.cfg by `tstats import-atc`.",
    "-- Comments name the ATC key each value came from. Check it with `tstats check --config FILE`;",
    "-- every key, its type and default: `tstats options`.",
    "return {",
  }
  for _, s in ipairs(sections) do
    if #s.lines > 0 then
      local ind = s.title and "    " or "  "
      if s.title then out[#out + 1] = "  " .. s.title .. " = {" end
      for _, l in ipairs(s.lines) do
        if l.comment then out[#out + 1] = ind .. "-- " .. l.comment end
        out[#out + 1] = ind .. l.key .. " = " .. l.value .. ","
      end
      if s.title then out[#out + 1] = "  }," end
    end
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

function M.run(o, rest)
  local file = rest[1]
  if not file or rest[2] then io.stderr:write(M.usage, "\n"); return 2 end
  local f, ferr = io.open(file, "rb")
  if not f then io.stderr:write("import-atc: cannot read ", tostring(ferr), "\n"); return 1 end
  local body = f:read("a")
  f:close()
  local cjson = require "cjson"
  local ok, doc = pcall(cjson.decode, body or "")
  if not ok then io.stderr:write("import-atc: ", file, " is not valid JSON: ", tostring(doc), "\n"); return 1 end
  if type(doc) ~= "table" or doc[1] ~= nil then
    io.stderr:write("import-atc: ", file, " is not a JSON object\n"); return 1
  end
  local text, report, envs, errs = M.convert(doc, { null = cjson.null, secrets_in_clear = o["secrets-in-clear"] })
  if #errs > 0 then
    for _, e in ipairs(errs) do io.stderr:write("import-atc: ", file, ": ", e, "\n") end
    return 1
  end
  -- the generated text must itself be a valid configuration
  local opt = require "options"
  local env = setmetatable({ env = function(_, d) return d end }, { __index = _G })
  local chunk, lerr = load(text, "=generated", "t", env)
  local user = chunk and chunk()
  local cfg, verr = opt.resolve(user, "generated config")
  if not chunk or not cfg then
    io.stderr:write("import-atc: internal error, the generated configuration is not valid: ",
      tostring(lerr or table.concat(verr, "; ")), "\n")
    return 1
  end
  local warnings = 0
  for _, r in ipairs(report) do
    if r.level == "warn" then warnings = warnings + 1 end
    io.stderr:write(("import-atc: %s: '%s' %s\n"):format(r.level == "warn" and "warning" or "note", r.key, r.msg))
  end
  if o.out then
    local ex = io.open(o.out, "rb")
    if ex and not o.force then
      ex:close()
      io.stderr:write("import-atc: ", o.out, " exists; --force replaces it\n")
      return 1
    end
    if ex then ex:close() end
    local w, werr = io.open(o.out, "wb")
    if not w then io.stderr:write("import-atc: cannot write ", tostring(werr), "\n"); return 1 end
    w:write(text)
    w:close()
    if o["secrets-in-clear"] then os.execute("chmod 600 '" .. o.out:gsub("'", "'\\''") .. "'") end
    io.stderr:write("import-atc: wrote ", o.out, "\n")
  else
    io.write(text)
  end
  for _, e in ipairs(envs) do
    io.stderr:write(("import-atc: set %s in tstats' environment (the value of %s%s)\n"):format(
      e.name, e.from, e.empty and ", empty in the ATC file" or ""))
  end
  io.stderr:write(("import-atc: %d warning(s)\n"):format(warnings))
  return 0
end

-- Entry point of the command table: opts parsed by it, args the positional ones.
function M.main(opts, args, ctx) return M.run(opts, args or {}, ctx and ctx.tty) end

return M
