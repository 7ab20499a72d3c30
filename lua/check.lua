-- `tstats check` (Lua side): the configuration was loaded and validated by
-- lua/options.lua + lua/validate.lua before this runs (an invalid one never
-- gets here: exit 2); this prints it with secrets masked and, with --connect,
-- contacts Traffic Ops, every InfluxDB URL and PostgreSQL, one pass/fail line each.
local tstats = require "tstats"

local K = {}

local function strip_auth(u) return (tostring(u):gsub("//[^/]*@", "//")) end

-- Each check: name, function -> ok, detail.
function K.connect_checks(cfg)
  local out = {}
  local to = cfg.traffic_ops
  out[#out + 1] = { "Traffic Ops " .. strip_auth(to.url), function()
    local client = require("to").new { url = to.url, user = to.user, password = to.password, insecure = to.insecure, timeout = to.timeout }
    local ok, err = client:login()
    if not ok then return false, tostring(err) end
    return true, "logged in as " .. tostring(to.user)
  end }
  local ic = cfg.influxdb
  for _, u in ipairs(ic.urls or {}) do
    out[#out + 1] = { "InfluxDB " .. strip_auth(u), function()
      local S = require("cli").influx_at(u)
      local ok, err = S.ping()
      if not ok then return false, tostring(err) end
      local rows, qerr = S.rows("SHOW DATABASES")
      if not rows then return false, "reachable, but SHOW DATABASES failed: " .. tostring(qerr) end
      local have = {}
      for _, r in ipairs(rows) do have[r.name] = true end
      local missing = {}
      for _, k in ipairs({ "cache", "ds", "daily" }) do
        local db = cfg.databases[k]
        if not have[db] then missing[#missing + 1] = db end
      end
      if #missing > 0 then
        return false, ("reachable, databases missing: %s (run `tstats setup-influx`)"):format(table.concat(missing, ", "))
      end
      return true, ("reachable, databases %s, %s, %s exist"):format(cfg.databases.cache, cfg.databases.ds, cfg.databases.daily)
    end }
  end
  local pg_sink = false
  for _, s in ipairs(cfg.summary.sinks or {}) do if s == "pg" then pg_sink = true end end
  if pg_sink and cfg.summary.enabled ~= false and cfg.postgres.conninfo then
    out[#out + 1] = { "PostgreSQL " .. require("options").mask("postgres.conninfo", cfg.postgres.conninfo), function()
      local conn, err = tstats.pg.connect(cfg.postgres.conninfo)
      if not conn then return false, tostring(err) end
      local rows, qerr = conn:query("SELECT to_regclass('stats_summary') IS NOT NULL AS ok")
      conn:close()
      if not rows then return false, "connected, but a query failed: " .. tostring(qerr) end
      if not rows[1].ok then return false, "connected, but there is no stats_summary table" end
      return true, "connected, stats_summary exists"
    end }
  end
  return out
end

function K.main(opts)
  local cfg = tstats.config
  local file = tstats._config_file or "[embedded]config.lua"
  print(("# configuration %s is valid"):format(file))
  print(require("options").dump(cfg))
  io.stdout:flush()
  -- derived metric definitions (lua/metrics.lua): their problems with file:line
  local drc = tstats._derive_check and tstats._derive_check() or 0
  if drc ~= 0 then return drc end
  if not opts.connect then return 0 end
  local failed = 0
  for _, c in ipairs(K.connect_checks(cfg)) do
    local ok, pass, detail = pcall(c[2])
    if not ok then pass, detail = false, tostring(pass) end
    print(("%s %s: %s"):format(pass and "PASS" or "FAIL", c[1], detail))
    if not pass then failed = failed + 1 end
  end
  print(failed == 0 and "# every check passed" or ("# %d check(s) failed"):format(failed))
  return failed == 0 and 0 or 1
end

return K
