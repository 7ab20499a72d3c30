-- Runtime spec: `tstats grafana --out DIR`. A real influxd with ATC's schema is
-- filled by the simulator and the daemon (`tstats once`), the continuous
-- queries run over the day (`tstats backfill-cq`) and the daily rollup writes
-- daily_stats; then every template variable (filled from its own query) and
-- every panel query of every generated dashboard must return data, and the
-- files must have Grafana's dashboard model and provisioning format.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

describe("tstats grafana", function()
  local tstats = stack.bin("tstats")
  local influx, sim, tmp, cfg, out
  local DB = { cache_stats = "cache_stats", deliveryservice_stats = "deliveryservice_stats", daily_stats = "daily_stats" }

  local function run(args)
    return stack.run(q(tstats) .. " --config " .. q(cfg) .. " " .. args, { timeout = 120 })
  end

  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
    sim = stack.sim_start("--cdns 2 --caches 6 --ds 3 --cachegroups 3")
    local info = sim.info
    cfg = tmp .. "/config.lua"
    stack.write_file(cfg, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q } },
  state_dir = %q,
  summary = { sinks = {} },
}
]]):format(info.to_url, influx.url, tmp .. "/state"))
    for i = 1, 2 do
      local rc, _, err = run("once")
      assert(rc == 0, err)
      if i == 1 then stack.sleep(2) end
    end
    local today = os.date("!%Y-%m-%d")
    local rc, o, err = run("backfill-cq --no-rollup --from " .. today .. " --to " .. today)
    assert(rc == 0, o .. err)
    -- today's rollup from what the continuous queries wrote (a closed day would need a day of data)
    local script = tmp .. "/day.lua"
    stack.write_file(script, [[
local summary = require "summary"
local n, err = summary.run_day(summary.day(summary.day_start(tstats.now())))
print("rows", n, err)
return n ~= nil and n > 0
]])
    rc, o, err = run("script " .. q(script))
    assert(rc == 0, o .. err)
    out = tmp .. "/grafana"
    rc, o, err = run("grafana --out " .. q(out))
    assert(rc == 0, o .. err)
  end)
  teardown(function()
    if sim then sim:stop() end
    stack.cleanup_all()
  end)

  local function query(db, text)
    local res, status, body = stack.influx_query(influx.url, text, db)
    assert.are.equal(200, status, body)
    local r = res.results[1]
    assert.is_nil(r.error, text .. ": " .. tostring(r.error))
    return r.series or {}
  end

  local function dashboards()
    local list = {}
    local _, names = stack.run("ls " .. q(out .. "/dashboards"))
    for name in names:gmatch("%S+") do
      list[#list + 1] = { file = name, doc = cjson.decode(stack.read_file(out .. "/dashboards/" .. name)) }
    end
    return list
  end

  local function regex_escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?/\\|{}]", "\\%0")) end

  -- Grafana's substitution: $var in '...' as is, in /^$var$/ regex-escaped.
  local function substitute(text, vars, range)
    text = text:gsub("%$timeFilter", "time > now() - " .. range)
    text = text:gsub("%$__interval", "1m")
    for name, value in pairs(vars) do
      text = text:gsub("/%^%$" .. name .. "%$/", function() return "/^" .. regex_escape(value) .. "$/" end)
      text = text:gsub("%$" .. name .. "([^%w_])", function(c) return value .. c end)
    end
    return text
  end

  it("writes the five dashboards with Grafana's model fields", function()
    local list = dashboards()
    local uids = {}
    for _, d in ipairs(list) do uids[d.doc.uid] = d.doc.title end
    for _, uid in ipairs({ "tstats-cdn", "tstats-cachegroup", "tstats-deliveryservice", "tstats-server", "tstats-daily" }) do
      assert.truthy(uids[uid], uid)
    end
    for _, d in ipairs(list) do
      local doc = d.doc
      assert.are.equal("number", type(doc.schemaVersion), d.file)
      assert.truthy(doc.schemaVersion >= 36)
      assert.are.equal("string", type(doc.title))
      assert.truthy(doc.time and doc.time.from and doc.time.to)
      assert.are.equal("table", type(doc.templating.list))
      assert.truthy(#doc.panels > 0)
      local ids = {}
      for _, p in ipairs(doc.panels) do
        assert.is_nil(ids[p.id], "panel ids are unique")
        ids[p.id] = true
        assert.are.equal("timeseries", p.type)
        assert.are.equal("influxdb", p.datasource.type)
        assert.truthy(DB[p.datasource.uid], p.datasource.uid)
        for _, k in ipairs({ "h", "w", "x", "y" }) do assert.are.equal("number", type(p.gridPos[k])) end
        assert.truthy(#p.targets > 0)
        for _, t in ipairs(p.targets) do
          assert.is_true(t.rawQuery)
          assert.are.equal("string", type(t.query))
          assert.truthy(t.refId:match("^[A-Z]$"))
          assert.are.equal(p.datasource.uid, t.datasource.uid)
          -- ATC's Scenes defect: bandwidth is stored in kbps, a bps panel multiplies by 1000 (or more)
          if p.fieldConfig.defaults.unit == "bps" then
            assert.truthy(t.query:find("%*1000"), p.title .. ": " .. t.query)
          end
        end
      end
      for _, v in ipairs(doc.templating.list) do
        assert.are.equal("query", v.type)
        assert.truthy(DB[v.datasource.uid])
        assert.are.equal("string", type(v.query))
      end
    end
  end)

  it("every template variable (filled from its own query) and every panel query returns data", function()
    local checked_panels, checked_vars = 0, 0
    for _, d in ipairs(dashboards()) do
      local doc = d.doc
      local range = doc.time.from:match("^now%-(%w+)$") or "6h"
      local vars = {}
      for _, v in ipairs(doc.templating.list) do
        local text = substitute(v.query, vars, range)
        -- ATC's defect was a FROM naming a policy that holds no such series
        local rp, m = text:match('FROM "([^"]+)"%."([^"]+)"')
        assert.truthy(rp, text)
        local cnt = query(DB[v.datasource.uid], ('SELECT count(*) FROM "%s"."%s"'):format(rp, m))
        assert.truthy(#cnt > 0, d.file .. ": variable $" .. v.name .. " reads an empty series: " .. text)
        local series = query(DB[v.datasource.uid], text)
        assert.truthy(#series > 0 and #series[1].values > 0, d.file .. ": variable $" .. v.name .. " is empty: " .. text)
        vars[v.name] = series[1].values[1][2]
        checked_vars = checked_vars + 1
      end
      for _, p in ipairs(doc.panels) do
        for _, t in ipairs(p.targets) do
          local text = substitute(t.query, vars, range)
          assert.falsy(text:find("%$[%a_]"), "unsubstituted variable: " .. text)
          local series = query(DB[t.datasource.uid], text)
          local values = 0
          for _, s in ipairs(series) do
            for _, row in ipairs(s.values or {}) do
              if type(row[2]) == "number" then values = values + 1 end
            end
          end
          assert.truthy(values > 0, d.file .. " / " .. p.title .. " returned no data: " .. text)
          checked_panels = checked_panels + 1
        end
      end
    end
    print(("\n[grafana] %d variable queries and %d panel queries returned data"):format(checked_vars, checked_panels))
    assert.truthy(checked_panels >= 15)
  end)

  it("writes the provisioning YAML in Grafana's format", function()
    local py = [[
import sys, yaml, json, os
ds = yaml.safe_load(open(sys.argv[1]))
pv = yaml.safe_load(open(sys.argv[2]))
print(json.dumps({"ds": ds, "pv": pv, "exists": os.path.isdir(pv["providers"][0]["options"]["path"])}))
]]
    local pyf = tmp .. "/check.py"
    stack.write_file(pyf, py)
    local rc, o, err = stack.run("/usr/bin/python3 " .. q(pyf) .. " " .. q(out .. "/provisioning/datasources/tstats.yaml")
      .. " " .. q(out .. "/provisioning/dashboards/tstats.yaml"))
    assert.are.equal(0, rc, err)
    local doc = cjson.decode(o)
    assert.are.equal(1, doc.ds.apiVersion)
    local names = {}
    for _, d in ipairs(doc.ds.datasources) do
      names[d.name] = d
      assert.are.equal("influxdb", d.type)
      assert.are.equal("proxy", d.access)
      assert.are.equal(influx.url, d.url)
      assert.are.equal(d.name, d.uid)
      assert.are.equal(DB[d.name], d.jsonData.dbName)
      assert.are.equal(DB[d.name], d.database)
      assert.is_nil(d.password, "no password in clear")
    end
    assert.truthy(names.cache_stats and names.deliveryservice_stats and names.daily_stats)
    assert.is_true(names.cache_stats.isDefault)
    assert.are.equal(1, doc.pv.apiVersion)
    local p = doc.pv.providers[1]
    assert.are.equal("file", p.type)
    assert.is_true(doc.exists)
    -- influxdb.ca_file: Grafana gets the CA itself, as a YAML literal block
    local pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nAbCd+/==\n-----END CERTIFICATE-----\n"
    stack.write_file(tmp .. "/ca.pem", pem)
    local cfg2 = tmp .. "/config-ca.lua"
    stack.write_file(cfg2, (stack.read_file(cfg):gsub("influxdb = { urls = { ([^}]*) } }",
      function(u) return ("influxdb = { urls = { %s }, ca_file = %q, user = \"grafana\" }"):format(u, tmp .. "/ca.pem") end)))
    local rc3, o3, e3 = stack.run(q(tstats) .. " --config " .. q(cfg2) .. " grafana --out " .. q(tmp .. "/g2"))
    assert.are.equal(0, rc3, o3 .. e3)
    stack.write_file(pyf, "import sys, yaml, json\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))\n")
    rc3, o3, e3 = stack.run("/usr/bin/python3 " .. q(pyf) .. " " .. q(tmp .. "/g2/provisioning/datasources/tstats.yaml"))
    assert.are.equal(0, rc3, e3)
    local d2 = cjson.decode(o3).datasources[1]
    assert.is_true(d2.jsonData.tlsAuthWithCACert)
    assert.are.equal(pem, d2.secureJsonData.tlsCACert)
    assert.are.equal("${INFLUX_PASSWORD}", d2.secureJsonData.password)
    assert.are.equal("grafana", d2.user)
    -- a second run keeps the files unless --force
    local rc2, _, err2 = run("grafana --out " .. q(out))
    assert.are.equal(1, rc2)
    assert.truthy(err2:find("exists", 1, true))
    assert.are.equal(0, (run("grafana --force --out " .. q(out))))
  end)
end)
