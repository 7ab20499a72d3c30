-- `tstats grafana --out DIR` (Lua side): writes Grafana provisioning files:
-- datasources (cache_stats, deliveryservice_stats, daily_stats; URL and user
-- from the configuration, the password as Grafana's $INFLUX_PASSWORD), a file
-- dashboard provider, and the dashboards of lua/grafana/dashboards.lua as JSON.
local M = {}

M.name = "grafana"
M.summary = "write Grafana provisioning files (datasources, dashboards)"
M.usage = [[
usage: tstats grafana --out DIR [--url URL] [--dashboards-path PATH] [--force]

Writes, under DIR:
  provisioning/datasources/tstats.yaml   InfluxDB datasources cache_stats, deliveryservice_stats,
                                         daily_stats (uid = name, as ATC's dashboards expect)
  provisioning/dashboards/tstats.yaml    a file provider reading the dashboards below
  dashboards/*.json                      CDN overview, cache group, delivery service, server,
                                         daily summaries
Copy provisioning/* into Grafana's provisioning directory and dashboards/ to
--dashboards-path (default: DIR/dashboards as an absolute path). The datasource
URL is the first of influxdb.urls unless --url; the InfluxDB password is read by
Grafana from its own environment ($INFLUX_PASSWORD), never written.
Dashboards are Lua data (grafana/dashboards.lua, overridable in script_dir).]]
M.options = { out = "value", url = "value", ["dashboards-path"] = "value", force = "flag" }

M.SCHEMA_VERSION = 39

-- ---- JSON with sorted keys and two-space indent (stable files for diffs) ----
local function is_array(t)
  if getmetatable(t) == M.array_mt then return true end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and n == #t
end
M.array_mt = {}
function M.array(t) return setmetatable(t or {}, M.array_mt) end

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
    return map[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

function M.json(v, ind)
  ind = ind or ""
  local t = type(v)
  if t == "table" then
    local inner = ind .. "  "
    local parts = {}
    if is_array(v) then
      if #v == 0 then return "[]" end
      for _, x in ipairs(v) do parts[#parts + 1] = inner .. M.json(x, inner) end
      return "[\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    if #keys == 0 then return "{}" end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = inner .. json_str(k) .. ": " .. M.json(v[k], inner) end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
  elseif t == "string" then
    return json_str(v)
  elseif t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return ("%.17g"):format(v)
  elseif t == "boolean" then
    return tostring(v)
  end
  return "null"
end

-- ---- YAML: ordered maps {{key, value}, ...}, lists, scalars ----
local function yaml_scalar(v)
  if type(v) == "string" then
    -- quote always: a URL, a ${VAR} or "yes" must stay a string
    return "'" .. v:gsub("'", "''") .. "'"
  end
  return tostring(v)
end

local function yaml_lines(v, ind, out)
  for _, kv in ipairs(v) do
    local k, x = kv[1], kv[2]
    if type(x) == "table" and x.list then
      out[#out + 1] = ind .. k .. ":"
      for _, item in ipairs(x.list) do
        local sub = {}
        yaml_lines(item, ind .. "    ", sub)
        sub[1] = ind .. "  - " .. sub[1]:sub(#ind + 5)
        for _, l in ipairs(sub) do out[#out + 1] = l end
      end
    elseif type(x) == "table" then
      out[#out + 1] = ind .. k .. ":"
      yaml_lines(x, ind .. "  ", out)
    elseif type(x) == "string" and x:find("\n", 1, true) then
      -- a literal block keeps the lines (a PEM certificate)
      out[#out + 1] = ind .. k .. ": |"
      for l in x:gsub("\n+$", ""):gmatch("[^\n]*") do
        if l ~= "" then out[#out + 1] = ind .. "  " .. l end
      end
    else
      out[#out + 1] = ind .. k .. ": " .. yaml_scalar(x)
    end
  end
end
function M.yaml(v)
  local out = {}
  yaml_lines(v, "", out)
  return table.concat(out, "\n") .. "\n"
end

-- ---- the provisioning documents ----
function M.datasources(cfg, url, ca_pem)
  local dbs = cfg.databases or {}
  local ic = cfg.influxdb or {}
  local list = {}
  for i, ds in ipairs({ { "cache_stats", dbs.cache or "cache_stats" },
    { "deliveryservice_stats", dbs.ds or "deliveryservice_stats" }, { "daily_stats", dbs.daily or "daily_stats" } }) do
    local d = {
      { "name", ds[1] }, { "uid", ds[1] }, { "type", "influxdb" }, { "access", "proxy" }, { "orgId", 1 },
      { "url", url }, { "database", ds[2] }, { "isDefault", i == 1 }, { "editable", false },
    }
    local jd = { { "dbName", ds[2] }, { "httpMode", "POST" }, { "timeInterval", "1m" } }
    if ic.insecure then jd[#jd + 1] = { "tlsSkipVerify", true } end
    local secure = {}
    if ca_pem then
      jd[#jd + 1] = { "tlsAuthWithCACert", true }
      secure[#secure + 1] = { "tlsCACert", ca_pem }
    end
    d[#d + 1] = { "jsonData", jd }
    if ic.user then
      d[#d + 1] = { "user", ic.user }
      secure[#secure + 1] = { "password", "${INFLUX_PASSWORD}" }
    end
    if #secure > 0 then d[#d + 1] = { "secureJsonData", secure } end
    list[#list + 1] = d
  end
  return { { "apiVersion", 1 }, { "datasources", { list = list } } }
end

function M.provider(path)
  return { { "apiVersion", 1 }, { "providers", { list = { {
    { "name", "tstats" }, { "orgId", 1 }, { "folder", "Traffic Stats" }, { "type", "file" },
    { "disableDeletion", false }, { "allowUiUpdates", true }, { "updateIntervalSeconds", 60 },
    { "options", { { "path", path }, { "foldersFromFilesStructure", false } } },
  } } } } }
end

local function ds_ref(uid) return { type = "influxdb", uid = uid } end

-- One dashboard table from lua/grafana/dashboards.lua -> Grafana's model.
function M.dashboard(d, rename)
  rename = rename or function(q) return q end
  local panels, vars = M.array(), M.array()
  local id = 0
  for i, p in ipairs(d.panels) do
    id = id + 1
    local targets = M.array()
    for j, t in ipairs(p.targets) do
      targets[#targets + 1] = {
        refId = string.char(64 + j), datasource = ds_ref(p.datasource), query = rename(t.query), rawQuery = true,
        resultFormat = "time_series", alias = t.alias,
      }
    end
    local w = p.width or 12
    panels[#panels + 1] = {
      id = id, type = "timeseries", title = p.title, datasource = ds_ref(p.datasource),
      gridPos = { h = p.height or 8, w = w, x = ((i - 1) % (24 // w)) * w, y = ((i - 1) // (24 // w)) * 8 },
      interval = p.interval or "1m",
      fieldConfig = {
        defaults = {
          unit = p.unit or "short",
          custom = {
            drawStyle = p.bars and "bars" or "line", fillOpacity = (p.stack or p.bars) and 60 or 10,
            stacking = { mode = p.stack and "normal" or "none", group = "A" },
            spanNulls = false, showPoints = "never", lineWidth = 1,
          },
        },
        overrides = M.array(),
      },
      options = { legend = { displayMode = "table", placement = "bottom", showLegend = true,
        calcs = M.array({ "mean", "max" }) }, tooltip = { mode = "multi", sort = "desc" } },
      targets = targets,
    }
  end
  for _, v in ipairs(d.variables or {}) do
    vars[#vars + 1] = {
      name = v.name, label = v.label or v.name, type = "query", datasource = ds_ref(v.datasource),
      query = rename(v.query), definition = rename(v.query), refresh = 2, sort = 1, multi = v.multi or false,
      includeAll = v.multi or false, hide = 0, regex = "", options = M.array(),
      current = {},
    }
  end
  return {
    uid = d.uid, title = d.title, tags = M.array(d.tags or {}), timezone = "utc", editable = true,
    schemaVersion = M.SCHEMA_VERSION, version = 1, graphTooltip = 1, refresh = d.refresh or "1m",
    time = d.time or { from = "now-6h", to = "now" }, timepicker = {},
    templating = { list = vars }, annotations = { list = M.array() }, links = M.array(), panels = panels,
  }
end

local function mkdir(p) return os.execute("mkdir -p '" .. p:gsub("'", "'\\''") .. "'") == true end

local function write(path, text, force)
  local ex = io.open(path, "rb")
  if ex then
    ex:close()
    if not force then return nil, path .. " exists; --force replaces it" end
  end
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

function M.run(o, rest)
  if not o.out or #rest > 0 then io.stderr:write(M.usage, "\n"); return 2 end
  local tstats = require "tstats"
  local cfg = tstats.config or {}
  local url = o.url or (cfg.influxdb and cfg.influxdb.urls and cfg.influxdb.urls[1])
  if not url then io.stderr:write("grafana: no InfluxDB URL (influxdb.urls or --url)\n"); return 1 end
  local out = o.out:gsub("/+$", "")
  if out:sub(1, 1) ~= "/" then
    local p = io.popen("pwd")
    local cwd = p and p:read("l")
    if p then p:close() end
    out = (cwd or ".") .. "/" .. out
  end
  local dpath = o["dashboards-path"] or (out .. "/dashboards")
  for _, d in ipairs({ out .. "/provisioning/datasources", out .. "/provisioning/dashboards", out .. "/dashboards" }) do
    if not mkdir(d) then io.stderr:write("grafana: cannot create ", d, "\n"); return 1 end
  end
  -- the daily policy is configurable; "monthly" is the continuous queries' own
  local rp = cfg.retention and cfg.retention.daily or "indefinite"
  local function rename(q)
    if rp ~= "indefinite" then q = q:gsub('"indefinite"%."daily_', '"' .. rp .. '"."daily_') end
    return q
  end
  -- Grafana wants the CA itself (a certificate is public); a client key is a
  -- secret and is left to the operator
  local ca_pem
  local ic = cfg.influxdb or {}
  if ic.ca_file then
    local f = io.open(ic.ca_file, "rb")
    if not f then io.stderr:write("grafana: cannot read influxdb.ca_file ", ic.ca_file, "\n"); return 1 end
    ca_pem = f:read("a")
    f:close()
  end
  if ic.ca_path or ic.client_cert then
    io.stderr:write("grafana: influxdb.ca_path / client_cert are not written into the datasources; "
      .. "add tlsCACert / tlsClientCert / tlsClientKey in Grafana\n")
  end
  local files = {
    { out .. "/provisioning/datasources/tstats.yaml", M.yaml(M.datasources(cfg, url, ca_pem)) },
    { out .. "/provisioning/dashboards/tstats.yaml", M.yaml(M.provider(dpath)) },
  }
  for _, d in ipairs(require("grafana.dashboards").list) do
    files[#files + 1] = { out .. "/dashboards/" .. d.uid .. ".json", M.json(M.dashboard(d, rename)) .. "\n" }
  end
  for _, f in ipairs(files) do
    local ok, err = write(f[1], f[2], o.force)
    if not ok then io.stderr:write("grafana: ", tostring(err), "\n"); return 1 end
    print("wrote " .. f[1])
  end
  if cfg.influxdb and cfg.influxdb.user then
    print("Grafana reads the InfluxDB password from its environment: set INFLUX_PASSWORD for grafana-server")
  end
  return 0
end

-- Entry point of the command table: opts parsed by it, args the positional ones.
function M.main(opts, args, ctx) return M.run(opts, args or {}, ctx and ctx.tty) end

return M
