-- Runtime spec: lua.memory_limit reaches every Lua state (the daemon's
-- mappings and `tstats script`), the Lua API never writes into the options
-- table a script hands it, and a missing database is one clear line.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("Lua limits and API hygiene", function()
  local influx, tmp

  setup(function()
    influx = stack.influxd_start()
    tmp = stack.tmpdir()
  end)
  teardown(function() stack.cleanup_all() end)

  local function write(path, body)
    local f = assert(io.open(path, "w"))
    f:write(body)
    f:close()
    return path
  end

  local function config(extra)
    return write(tmp .. "/config-" .. tostring(math.random(1e9)) .. ".lua", ([[
return {
  traffic_ops = { url = "http://127.0.0.1:1" },
  influxdb = { urls = { %q } },
  state_dir = %q,
  summary = { enabled = false },
  %s
}]]):format(influx.url, tmp .. "/state", extra or ""))
  end

  -- about 60-100 MB of Lua strings
  local HOG = [[local t = {} for i = 1, 1000000 do t[i] = ("x"):rep(40) .. i end]]

  it("tstats script runs under lua.memory_limit", function()
    local script = write(tmp .. "/hog.lua", HOG .. "\nreturn 0\n")
    local rc, _, err = stack.run(tstats .. " --config " .. config("lua = { memory_limit = 16 * 1024 * 1024 },") ..
      " script " .. script, { timeout = 60 })
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("not enough memory", 1, true), err)
    -- the same script fits the default limit (512 MiB)
    rc, _, err = stack.run(tstats .. " --config " .. config() .. " script " .. script, { timeout = 60 })
    assert.are.equal(0, rc, err)
  end)

  local function start_sim(args)
    local sim = stack.sim_start(args)
    return sim, sim.to_url
  end

  it("the daemon's mappings run under lua.memory_limit", function()
    local sim, to_url = start_sim("--cdns 1 --caches 3")
    local sd = stack.tmpdir()
    os.execute("mkdir -p " .. sq(sd .. "/mappings"))
    -- a cache stats mapping that allocates ~80 MB when it loads
    write(sd .. "/mappings/cachestats.lua", HOG .. "\nreturn { stat = function() end, entity = function() end }\n")
    local function cfg(limit)
      return write(tmp .. "/d-" .. tostring(math.random(1e9)) .. ".lua", ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q } },
  state_dir = %q, script_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  %s
}]]):format(to_url, influx.url, tmp .. "/state-d", sd, limit))
    end
    local _, _, err = stack.run(tstats .. " --config " .. cfg("lua = { memory_limit = 16 * 1024 * 1024 },") ..
      " poll --dry-run", { timeout = 60 })
    assert.truthy(err:find("not enough memory", 1, true), err)
    assert.truthy(err:find("mapping 'mappings.cachestats' could not be loaded", 1, true), err)
    _, _, err = stack.run(tstats .. " --config " .. cfg("") .. " poll --dry-run", { timeout = 60 })
    assert.falsy(err:find("not enough memory", 1, true), err)
    sim:stop()
  end)

  it("the daemon's mapping calls run under lua.hook_budget", function()
    local sim, to_url = start_sim("--cdns 1 --caches 3")
    local sd = stack.tmpdir()
    os.execute("mkdir -p " .. sq(sd .. "/mappings"))
    write(sd .. "/mappings/cachestats.lua", "return { stat = function() while true do end end, entity = function() return {} end }\n")
    local cfg = write(tmp .. "/budget.lua", ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { %q } },
  state_dir = %q, script_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  lua = { hook_budget = 100000 },
}]]):format(to_url, influx.url, tmp .. "/state-b", sd))
    local _, _, err = stack.run(tstats .. " --config " .. cfg .. " poll --dry-run", { timeout = 60 })
    assert.truthy(err:find("script exceeded its instruction budget", 1, true), err)
    sim:stop()
  end)

  it("tstats.http.get/post leave the caller's options table as it was", function()
    local script = write(tmp .. "/opts.lua", ([[
local o = { timeout = 5 }
local r = assert(tstats.http.post(%q, "q=SHOW DATABASES", o))
assert(r.status == 200, "POST status " .. tostring(r.status))
assert(o.url == nil and o.body == nil and o.method == nil, "post wrote into the options table")
r = assert(tstats.http.get(%q, o))
assert(r.status == 204, "GET status " .. tostring(r.status))
assert(next(o) == "timeout" and next(o, "timeout") == nil, "get wrote into the options table")
return 0
]]):format(influx.url .. "/query", influx.url .. "/ping"))
    local rc, _, err = stack.run(tstats .. " --config " .. config() .. " script " .. script, { timeout = 60 })
    assert.are.equal(0, rc, err)
  end)

  it("a missing database is one line naming tstats setup-influx, not one per chunk", function()
    local sim, to_url = start_sim("--cdns 2 --caches 3 --payload-cache-ms 0")
    local cfg = stack.write_config(tmp .. "/nodb.lua", { to_url = to_url, influx_url = influx.url,
      state_dir = tmp .. "/state-nodb",
      extra = ('databases = { cache = "nodb_cache_%d", ds = "nodb_ds_%d" },'):format(math.random(1e9), math.random(1e9)) })
    local d = stack.tmpdir()
    local ts = stack.spawn("exec " .. tstats .. " --config " .. cfg .. " run", d .. "/tstats.log")
    assert.truthy(stack.wait_until(function()
      local _, n = (stack.read_file(d .. "/tstats.log") or ""):gsub("Collected %d+ cache stats", "")
      return n >= 8
    end, 30, 0.2))
    ts:kill("TERM")
    ts:wait(30)
    local log = stack.read_file(d .. "/tstats.log")
    local _, hints = log:gsub("run `tstats setup%-influx`", "")
    assert.are.equal(1, hints, log)
    assert.falsy(log:find("WARN writer: HTTP 404", 1, true), log)
    sim:stop()
  end)
end)
