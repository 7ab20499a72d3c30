-- Runtime spec (issue "custom metrics computed in C"): the real tstats daemon
-- polls the simulator with the shipped definitions enabled and writes into a
-- real influxd; the 1-minute series computed at ingest must equal, window by
-- window, what ATC's own continuous queries compute inside influxd from the
-- raw points the same run stored (the CQs' statements run over the run's
-- time range, as backfill-cq runs them). Float rounding: the two sides add
-- the same numbers in a different order, so they agree to ~1e-15 relative;
-- the test allows 1e-9.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local schema = require "schema"

local tstats_bin = stack.bin("tstats")
local influx, tmp

local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function start_sim(args) return stack.sim_start(args) end

local function query(q, db)
  local d = stack.influx_query(influx.url, q, db, { epoch = "ms" })
  assert(d and d.results and d.results[1], "query failed: " .. q)
  assert(not d.results[1].error, "query error: " .. tostring(d.results[1].error) .. ": " .. q)
  return d.results[1]
end

-- { ["tagk=v,..."] = { [time_ms] = value } } of a GROUP BY query.
local function by_series(res)
  local out, n = {}, 0
  for _, s in ipairs(res.series or {}) do
    local keys = {}
    for k, v in pairs(s.tags or {}) do if v ~= "" then keys[#keys + 1] = k .. "=" .. v end end
    table.sort(keys)
    local key = table.concat(keys, ",")
    out[key] = out[key] or {}
    for _, row in ipairs(s.values) do
      if row[2] ~= cjson.null then out[key][row[1]] = row[2]; n = n + 1 end
    end
  end
  return out, n
end

local function cq(name)
  for _, db in ipairs(schema.databases) do
    for _, c in ipairs(db.cqs) do if c.name == name then return c, db.name end end
  end
  error("no CQ " .. name)
end

local function rfc3339(ms) return os.date("!%Y-%m-%dT%H:%M:%SZ", ms // 1000) end

describe("derived metrics #asan", function()
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = stack.tmpdir()
  end)
  teardown(function() stack.cleanup_all() end)

  it("computes ATC's 1-minute CQ series at ingest, equal to what the CQs compute in influxd from the raw points", function()
    local sim = start_sim("--cdns 2 --caches 8 --ds 3 --cachegroups 3 --payload-cache-ms 0 --poll-ms 1000")
    -- the shipped atc_cq definitions under other names, so influxd's own CQs cannot write the same series
    local sdir = tmp .. "/scripts"
    os.execute("mkdir -p " .. sq(sdir .. "/metrics"))
    local f = assert(io.open(sdir .. "/metrics/ingest_cq.lua", "w"))
    f:write([[
local out = {}
for _, d in ipairs(require "metrics.atc_cq") do
  local c = {}
  for k, v in pairs(d) do c[k] = v end
  c.name = "ingest." .. d.name
  out[#out + 1] = c
end
return out
]])
    f:close()
    local cfg = stack.write_config(tmp .. "/config.lua", { to_url = sim.info.to_url, influx_url = influx.url,
      config_interval = 300, state_dir = tmp .. "/state",
      extra = ("script_dir = %q,\n  metrics = { \"ingest_cq\", \"cache_health\" },"):format(sdir) })
    local rc, out = stack.run(tstats_bin .. " check --config " .. sq(cfg))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("# metrics: 11 derived definition(s), 0 error(s)", 1, true), out)

    local log = tmp .. "/tstats.log"
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    -- two closed minutes of both CDNs (the first may be partial: the CQs see the same partial raw data)
    local ok = stack.wait_until(function()
      local _, n = by_series(query('SELECT value FROM "monthly"."ingest.bandwidth.cdn.1min" GROUP BY cdn', "cache_stats"))
      return n >= 4
    end, 150, 1)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    sim:stop()
    assert.truthy(ok, "no closed minute written at ingest: " .. tostring(stack.read_file(log)):sub(-3000))
    local logtext = stack.read_file(log)
    assert.truthy(logtext:find("metrics: 11 derived metric definition(s) loaded", 1, true))
    -- InfluxDB took every line (a derived line it refused would drop its chunk's raw points too)
    assert.falsy(logtext:find("unable to parse", 1, true) or logtext:find("partial write", 1, true), logtext:sub(-2000))

    local function compare(ingest_meas, cq_names, db, group)
      local ing, n = by_series(query(('SELECT value FROM "monthly".%q GROUP BY %s'):format(ingest_meas, group), db))
      assert.truthy(n >= 2, ingest_meas .. ": " .. n .. " ingest points")
      local lo, hi = math.huge, -math.huge
      for _, pts in pairs(ing) do
        for t in pairs(pts) do lo = math.min(lo, t); hi = math.max(hi, t) end
      end
      for _, name in ipairs(cq_names) do
        local c = cq(name)
        query(schema.cq_select(c, rfc3339(lo), rfc3339(hi + 60000)), db)
      end
      local target = ingest_meas:gsub("^ingest%.", "")
      local ref = by_series(query(('SELECT value FROM "monthly".%q WHERE time >= %dms AND time <= %dms GROUP BY %s')
        :format(target, lo, hi, group), db))
      local compared, worst = 0, 0
      for key, pts in pairs(ing) do
        for t, v in pairs(pts) do
          local want = ref[key] and ref[key][t]
          assert.is_not_nil(want, ("%s %s @%d: ingest %.17g, the CQ has no point"):format(ingest_meas, key, t, v))
          local rel = math.abs(v - want) / math.max(math.abs(want), 1e-300)
          worst = math.max(worst, rel)
          assert.truthy(rel <= 1e-9, ("%s %s @%d: ingest %.17g vs CQ %.17g"):format(ingest_meas, key, t, v, want))
          compared = compared + 1
        end
      end
      -- and no group the CQ wrote in those minutes is missing at ingest
      for key, pts in pairs(ref) do
        for t in pairs(pts) do
          assert.is_not_nil(ing[key] and ing[key][t], ("%s %s @%d: the CQ wrote it, ingest did not"):format(target, key, t))
        end
      end
      return compared, worst
    end
    local n1, w1 = compare("ingest.bandwidth.cdn.1min", { "bandwidth_1min", "bandwidth_cdn_1min" }, "cache_stats", "cdn")
    local n2, w2 = compare("ingest.bandwidth.cdn.type.1min", { "bandwidth_1min", "bandwidth_cdn_type_1min" }, "cache_stats", "cdn, type")
    local n3, w3 = compare("ingest.kbps.cg.1min", { "kbps_cg_1min" }, "deliveryservice_stats", "*")
    local n4, w4 = compare("ingest.kbps.ds.1min", { "kbps_ds_1min" }, "deliveryservice_stats", "*")
    print(("\n  compared %d + %d + %d + %d points; worst relative difference %.3g"):format(n1, n2, n3, n4,
      math.max(w1, w2, w3, w4)))
    assert.truthy(n1 >= 4 and n2 >= 8 and n3 >= 2 and n4 >= 2)

    -- the per-poll definitions of cache_health: present, and sane
    local r = query('SELECT count(value), min(value), max(value) FROM "daily"."ram_cache.hits.rate"', "cache_stats")
    assert.truthy(r.series and r.series[1].values[1][2] > 0, "counter rates written")
    assert.truthy(r.series[1].values[1][3] >= 0, "rates are never negative (the sim's counters only grow)")
    r = query('SELECT min(value), max(value) FROM "daily"."cache.disk.used_ratio"', "cache_stats")
    assert.truthy(r.series and r.series[1].values[1][2] > 0 and r.series[1].values[1][3] < 1, "used/total in (0, 1)")
    r = query('SELECT count(value) FROM "daily"."edge.maxkbps.max" GROUP BY cdn', "cache_stats")
    assert.are.equal(2, #(r.series or {}), "one filtered max series per CDN")
  end)

  it("tstats map prints the derived points of the configuration's definitions next to the mapped ones", function()
    local cfg = tmp .. "/config-map.lua"
    local f = assert(io.open(cfg, "w"))
    f:write([[return { traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { "http://127.0.0.1:1" } },
  summary = { enabled = false },
  metrics = { metric { name = "bandwidth.cdn", from = "bandwidth", agg = "sum", group_by = { "cdn" } },
              { name = "maxkbps.max", from = "maxKbps", agg = "max", group_by = { "cdn" }, rp = "monthly" } } }
]])
    f:close()
    local root = stack.root()
    local rc, out, err = stack.run(tstats_bin .. " --config " .. sq(cfg) .. " map --payload "
      .. sq(root .. "/spec/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json") .. " --servers "
      .. sq(root .. "/spec/fixtures/to/to_v5_servers_GET_response.json") .. " --cdn CDN-in-a-Box", { timeout = 30 })
    assert.are.equal(0, rc, err)
    -- the sum of the two caches' bandwidth lines, and the max of their maxKbps, in the definitions' destinations
    local sum, max = 0, -math.huge
    for v in out:gmatch("\nbandwidth,[^ ]* value=([^ ]+) ") do sum = sum + tonumber(v) end
    for v in out:gmatch("\nmaxKbps,[^ ]* value=([^ ]+) ") do max = math.max(max, tonumber(v)) end
    assert.truthy(out:find("\nbandwidth.cdn,cdn=CDN-in-a-Box value=" .. ("%.17g"):format(sum):gsub("%.0+$", "") .. " ", 1, true), out)
    assert.truthy(out:find("# db=cache_stats rp=monthly precision=ms (1 points)\nmaxkbps.max,cdn=CDN-in-a-Box value="
      .. ("%.17g"):format(max):gsub("%.0+$", "") .. " ", 1, true), out)
  end)

  it("refuses definitions with errors at start-up and in check (file:line), keeps the running ones on SIGHUP", function()
    local sim = start_sim("--cdns 1 --caches 3 --ds 1 --payload-cache-ms 0")
    local cfg = tmp .. "/config2.lua"
    local function write(metrics)
      stack.write_config(cfg, { to_url = sim.info.to_url, influx_url = influx.url, state_dir = tmp .. "/state2",
        collect = false, extra = "metrics = {\n" .. metrics .. "\n  }," })
    end
    write([[    { name = "bad.one", from = "bandwidth", agg = "avg", group_by = { "cdn" } },]])
    local rc, out = stack.run(tstats_bin .. " check --config " .. sq(cfg))
    assert.are.equal(2, rc, out)
    assert.truthy(out:find(cfg .. ":7: error: bad.one: agg \"avg\" is not one of", 1, true), out)
    local rc2, _, err = stack.run(tstats_bin .. " --config " .. sq(cfg) .. " once", { timeout = 30 })
    assert.truthy(err:find(cfg .. ":7: error: bad.one", 1, true), err)
    assert.are.equal(2, rc2, "start-up stops on a definition error")

    write([[    { name = "reload.sum", from = "bandwidth", agg = "sum", group_by = { "cdn" } },]])
    local log = tmp .. "/tstats2.log"
    local ts = stack.spawn("exec " .. tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    local function count(m)
      local r = query(('SELECT count(value) FROM "daily".%q'):format(m), "cache_stats")
      return r.series and r.series[1].values[1][2] or 0
    end
    assert.truthy(stack.wait_until(function() return count("reload.sum") >= 2 end, 30, 0.5), "derived points written")
    -- a broken edit: refused, the running definition goes on
    write([[    { name = "reload.sum2", from = "bandwidth", agg = "sum", group_by = "cdn" },]])
    ts:kill("HUP")
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(log) or ""):find("derived metrics: keeping the running definitions", 1, true)
    end, 20, 0.2), stack.read_file(log))
    local n0 = count("reload.sum")
    assert.truthy(stack.wait_until(function() return count("reload.sum") > n0 end, 20, 0.5), "old definition still runs")
    -- a good edit: the new set replaces the old one
    write([[    { name = "reload.max", from = "bandwidth", agg = "max", group_by = { "cdn" } },]])
    ts:kill("HUP")
    assert.truthy(stack.wait_until(function() return count("reload.max") >= 2 end, 30, 0.5), "new definition after SIGHUP")
    -- the replaced definition stopped: none of its points is newer than the new one's first
    -- (by sample time, so a batch the writer sends late cannot make this flaky)
    stack.sleep(3)
    local function edge(fn, m)
      local r = query(('SELECT %s(value) FROM "daily".%q'):format(fn, m), "cache_stats")
      return r.series and r.series[1].values[1][1]
    end
    local last_old, first_new = edge("last", "reload.sum"), edge("first", "reload.max")
    assert.truthy(last_old and first_new and last_old <= first_new,
      ("last reload.sum point at %s, first reload.max at %s"):format(tostring(last_old), tostring(first_new)))
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    sim:stop()
  end)
end)
