-- Runtime spec (issue "a command line an operator can trust", the mapping test loop): the
-- real tstats binary runs mappings offline over saved Traffic Monitor payloads and a saved
-- Traffic Ops servers list (`tstats map`), reports Lua errors with file:line and refuses
-- unknown answer keys, and runs the examples that modules carry (`tstats test`).
local stack = require "spec.runtime.stack"

local tstats = stack.bin("tstats")
local sq = stack.quote
local root = stack.root()

local function write(path, s)
  os.execute("mkdir -p " .. sq(path:match("^(.*)/[^/]*$")))
  stack.write_file(path, s)
  return path
end

describe("the mapping test loop #asan", function()
  local tmp
  setup(function() tmp = stack.tmpdir() end)
  teardown(function() stack.cleanup_all() end)

  local function cfg(extra)
    return write(tmp .. "/cfg-" .. tostring(math.random(1e9)) .. ".lua", ([[return {
      traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { "http://127.0.0.1:1" } },
      summary = { enabled = false }, %s }]]):format(extra or ""))
  end

  it("maps a saved CacheStats payload with a saved servers list, offline: lines and a per-measurement summary", function()
    local rc, out, err = stack.run(tstats .. " map --payload " .. sq(root .. "/spec/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json")
      .. " --servers " .. sq(root .. "/spec/fixtures/to/to_v5_servers_GET_response.json") .. " --cdn CDN-in-a-Box", { timeout = 30 })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("# db=cache_stats rp=daily precision=ms (14 points)", 1, true), out)
    -- the one server the TO list knows gets its cache group and type; the other hostname and cdn only
    assert.truthy(out:find("\nbandwidth,cachegroup=CDN_in_a_Box_Mid,cdn=CDN-in-a-Box,hostname=mid,type=MID value=", 1, true), out)
    assert.truthy(out:find("\nbandwidth,cdn=CDN-in-a-Box,hostname=edge value=", 1, true), out)
    assert.truthy(out:find("\n# bandwidth%s+2%s+2\n"), out)
    assert.truthy(out:find("# 14 points in 8 measurements; 0 endpoint(s) failed", 1, true), out)
    -- from another directory with a relative path, and a DsStats payload (format guessed)
    rc, out, err = stack.run(tstats .. " map --summary --payload fixtures/synthesized/tm_DsStats_unfiltered_one_ds.json", { cwd = root .. "/spec", timeout = 30 })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("# db=deliveryservice_stats", 1, true) == nil, "--summary prints no lines")
    assert.truthy(out:find("\n# kbps%s+3%s+3\n"), out)
  end)

  it("runs a format = \"lua\" mapping from script_dir and reports its errors with file:line", function()
    local dir = tmp .. "/scripts"
    write(dir .. "/mappings/mine.lua", [[
local tstats = require "tstats"
local M = {}
function M.payload(body, ctx)
  local doc = tstats.json.decode(body)
  local points = {}
  for name, v in pairs(doc) do
    if v < 0 then error("negative value for " .. name) end
    points[#points + 1] = { measurement = "mine", tags = { name = name, cdn = ctx.cdn }, fields = { value = v }, time = 1000 }
  end
  return points
end
return M
]])
    local good = write(tmp .. "/good.json", [[{"a": 1.5}]])
    local bad = write(tmp .. "/bad.json", [[{"a": -1}]])
    local c = cfg(("script_dir = %q"):format(dir))
    local rc, out, err = stack.run(tstats .. " --config " .. c .. " map --format lua --mapping mine --cdn x --payload " .. sq(good), { timeout = 30 })
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("\nmine,cdn=x,name=a value=1.5 1000\n", 1, true), out)
    rc, out, err = stack.run(tstats .. " --config " .. c .. " map --format lua --mapping mine --payload " .. sq(bad), { timeout = 30 })
    assert.are.equal(1, rc, out)
    assert.truthy(err:find(dir .. "/mappings/mine.lua:7: negative value for a", 1, true), err)
    assert.truthy(out:find("1 endpoint(s) failed", 1, true), out)
    rc, _, err = stack.run(tstats .. " --config " .. c .. " map --format lua --payload " .. sq(good))
    assert.are.equal(2, rc)
    assert.truthy(err:find("--format lua needs --mapping", 1, true), err)
    rc, _, err = stack.run(tstats .. " --config " .. c .. " map --mapping nosuch --payload " .. sq(good) .. " --format lua")
    assert.are.equal(2, rc)
    assert.truthy(err:find("mapping module 'mappings.nosuch' not found", 1, true), err)
  end)

  it("refuses stat answers with unknown keys, naming the key once per stat name, and a raised error has file:line", function()
    local dir = tmp .. "/typo"
    write(dir .. "/mappings/typo.lua", [[
local M = {}
function M.entity(name) return { hostname = name } end
function M.stat(name)
  if name == "bandwidth" then return { measurement = "bw", Scale = 8 } end
  if name == "maxKbps" then return { measurement = "max", tag = { a = "b" } } end
  if name == "ats.proxy.process.http.current_client_connections" then error("boom") end
  return { measurement = name, scale = 2 }
end
return M
]])
    local c = cfg(("script_dir = %q"):format(dir))
    local rc, out, err = stack.run(tstats .. " --config " .. c .. " map --mapping typo --payload "
      .. sq(root .. "/spec/fixtures/synthesized/tm_CacheStats_legacy_hc1_wildcard.json"), { timeout = 30 })
    assert.are.equal(1, rc, out)
    local _, n_scale = err:gsub("unknown key 'Scale' in the answer", "")
    local _, n_tag = err:gsub("unknown key 'tag' in the answer", "")
    assert.are.equal(1, n_scale, err)   -- two caches report bandwidth: one warning
    assert.are.equal(1, n_tag, err)
    assert.truthy(err:find('stat("bandwidth")', 1, true), err)
    assert.truthy(err:find(dir .. "/mappings/typo.lua:6: boom", 1, true), err)
    assert.falsy(out:find("\nbw,", 1, true), "a refused answer writes nothing")
    assert.falsy(out:find("\nmax,", 1, true), out)
    assert.truthy(out:find("\ninBytes,hostname=", 1, true), out)
  end)

  it("tstats test runs the stock modules' examples, and a failing example shows a diff", function()
    local rc, out, err = stack.run(tstats .. " test --verbose", { timeout = 60 })
    assert.are.equal(0, rc, out .. err)
    for _, m in ipairs({ "mappings.cachestats", "mappings.dsstats", "mappings.crstates", "rollups.daily", "rollups.ds_daily_max" }) do
      assert.truthy(out:find("ok   " .. m .. " example 1", 1, true), m .. "\n" .. out)
    end
    assert.truthy(out:find("# 5 examples, 0 failed", 1, true), out)
    local dir = tmp .. "/wrong"
    write(dir .. "/mappings/wrong.lua", [[
local M = {}
function M.entity(name) return { hostname = name } end
function M.stat(name) return { measurement = name:upper() } end
M.examples = { { name = "upper-case", payload = [=[{"caches":{"e1":{"bandwidth":[{"value":"1","time":5,"span":1}]}}}]=],
  expect = [=[
    BANDWIDTH,hostname=e1 value=2 5
  ]=] } }
return M
]])
    write(dir .. "/rollups/sum.lua", [[
local M = { name = "sum", stats = { "s" } }
function M.compute(day, ctx)
  local series = ctx.query("SELECT sum(value) FROM x", "db")
  return { { cdn = "c", stat_name = "s", value = series[1].values[1][2], time = day.start } }
end
M.examples = { { day = "2025-12-01", answers = { { match = "sum%(", series = { { values = { { 0, 7 } } } } } },
  expect = { { cdn = "c", stat_name = "s", value = 7, time = 1764547200 } } } }
return M
]])
    local c = cfg(("script_dir = %q"):format(dir))
    rc, out = stack.run(tstats .. " --config " .. c .. " test", { timeout = 60 })
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("FAIL mappings.wrong example 1 (upper-case): - expected, + got\n  -BANDWIDTH,hostname=e1 value=2 5\n  +BANDWIDTH,hostname=e1 value=1 5", 1, true), out)
    assert.falsy(out:find("FAIL rollups.sum", 1, true), out)
    assert.truthy(out:find("# 7 examples, 1 failed", 1, true), out)
    rc, out = stack.run(tstats .. " --config " .. c .. " test rollups.sum --verbose", { timeout = 60 })
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("ok   rollups.sum example 1", 1, true), out)
  end)
end)
