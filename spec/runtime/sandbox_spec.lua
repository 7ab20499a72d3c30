-- Runtime spec: mapping modules run in the allow-list sandbox (lua/sandbox.lua):
-- each forbidden call is refused with a clear error naming file:line, the
-- entity it was made for is dropped and counted, and the poll goes on.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local function sq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, body)
  local f = assert(io.open(path, "w"))
  f:write(body)
  f:close()
  return path
end

-- cache N of the simulator's CDN tries forbidden thing N when it is mapped
local MAPPING = [[
local tstats = require "tstats"
local base = require "mappings.cachestats"
local tries = {
  function() return io.open("/etc/hostname") end,
  function() return os.execute("true") end,
  function() return tstats.http.get("http://127.0.0.1:1/") end,
  function() return tstats.influx.query("SHOW DATABASES") end,
  function() return tstats.sleep(1) end,
  function() return load("return 1") end,
  function() print("x") end,
  function() return debug.traceback() end,
  function() return package.loaded end,
}
local M = {}
function M.stat(name, ctx) return base.stat(name, ctx) end
function M.entity(name, ctx)
  local i = tonumber(name:match("^edge%-cdn1%-(%d+)$"))
  if i and tries[i] then tries[i]() end
  return base.entity(name, ctx)
end
return M
]]

local REFUSED = { "'io' is not available", "os.execute is not available", "tstats.http is not available",
  "tstats.influx is not available", "tstats.sleep is not available", "'load' is not available",
  "'print' is not available", "'debug' is not available", "'package' is not available" }

describe("the mapping sandbox", function()
  teardown(function() stack.cleanup_all() end)

  it("refuses every forbidden call with a clear error while the poll goes on", function()
    local sim = stack.sim_start("--cdns 1 --caches 12 --ds 0")
    local dir, to_url = sim.dir, sim.to_url
    local sd = stack.tmpdir()
    os.execute("mkdir -p " .. sq(sd .. "/mappings"))
    local mpath = write(sd .. "/mappings/sandboxed.lua", MAPPING)
    local cfg = write(dir .. "/config.lua", ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  state_dir = %q, script_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  endpoints = { { name = "Sandboxed", path = "/publish/CacheStats", format = "tm_cachestats",
                  mapping = "mappings.sandboxed", db = "sandboxed_db", rp = "daily" } },
}]]):format(to_url, dir .. "/state", sd))
    local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " poll --dry-run", { timeout = 60 })
    assert.are.equal(0, rc, err)
    for i, what in ipairs(REFUSED) do
      assert.truthy(err:find(what, 1, true), what .. "\n" .. err)
      -- the error names the mapping file and the line of the call
      assert.truthy(err:find(mpath .. ":" .. (3 + i) .. ":", 1, true), "file:line of try " .. i .. "\n" .. err)
    end
    -- the caches that tried nothing are mapped (only the refused ones are missing),
    -- and the stock endpoint is polled as well, every cache of it
    local sections, cur = {}, nil
    for line in out:gmatch("[^\n]+") do
      local db = line:match("^# POST /write%?db=([%w_]+)")
      if db then cur = db; sections[db] = sections[db] or {}
      elseif cur then
        local h = line:match("hostname=([^,%s]+)")
        if h then sections[cur][h] = true end
      end
    end
    local sb, stock = sections.sandboxed_db or {}, sections.cache_stats or {}
    for i = 1, #REFUSED do
      assert.falsy(sb["edge-cdn1-" .. i], "refused cache " .. i .. " is not mapped")
      assert.truthy(stock["edge-cdn1-" .. i], "stock endpoint has cache " .. i .. "\n" .. err)
    end
    local left = 0
    for _ in pairs(sb) do left = left + 1 end
    assert.truthy(left > 0, "the other caches of the sandboxed endpoint are written")
    -- what the refused caches would have written is counted and said, not silently missing;
    -- the stock endpoint lost nothing
    local lost = tonumber(err:match("Collected %d+ cache stats values for cdn1 @ %d+ %((%d+) lost to mapping errors%)"))
    assert.truthy(lost and lost >= 9 * 40, err)
    assert.truthy(err:find("mapping 'mappings.sandboxed' [cdn1 Sandboxed]: " .. lost ..
      " samples of this poll were lost because the mapping failed", 1, true), err)
    local _, nlost = err:gsub("lost to mapping errors", "")
    assert.are.equal(1, nlost, err)
    sim:stop()
  end)

  it("bounds a looping mapping's Lua time per endpoint and poll: other endpoints keep every poll, SIGTERM is prompt", function()
    local sim = stack.sim_start("--cdns 1 --caches 200 --ds 2")
    local dir, to_url = sim.dir, sim.to_url
    local sd = stack.tmpdir()
    os.execute("mkdir -p " .. sq(sd .. "/mappings"))
    local mpath = write(sd .. "/mappings/looping.lua", [[
local base = require "mappings.cachestats"
return { stat = base.stat, entity = function(name, ctx)
  while true do end
end }
]])
    local cfg = write(dir .. "/config.lua", ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  polling_interval = 1, publishing_interval = 3600, shutdown_timeout = 3,
  state_dir = %q, script_dir = %q,
  collect = { timeout = 0.5, connect_timeout = 0.5 },
  summary = { enabled = false },
  lua = { poll_budget_ms = 100 },
  endpoints = { { name = "Looping", path = "/publish/CacheStats", format = "tm_cachestats",
                  mapping = "mappings.looping", db = "looping_db", rp = "daily" } },
}]]):format(to_url, dir .. "/state", sd))
    local ts = stack.spawn("exec " .. tstats .. " --config " .. cfg .. " run", dir .. "/tstats.log")
    local function log() return stack.read_file(dir .. "/tstats.log") or "" end
    -- the stock endpoints of the same CDN are polled every second meanwhile
    assert.truthy(stack.wait_until(function()
      return select(2, log():gsub("Collected 8000 cache stats values", "")) >= 4
    end, 40, 0.2), log())
    local t0 = stack.now and stack.now() or os.time()
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    local l = log()
    assert.truthy(l:find("its Lua budget for this poll (lua.poll_budget_ms) is spent", 1, true), l)
    assert.truthy(l:find("deferred to the next poll)", 1, true), l)
    -- budget errors name the running function's file:line
    assert.truthy(l:find(mpath .. ":3: script exceeded its instruction budget", 1, true), l)
    assert.falsy(l:find("previous poll still running", 1, true), l)
    sim:stop()
  end)

  it("SIGHUP with a broken mapping keeps the running one for that endpoint, naming file:line", function()
    local sim = stack.sim_start("--cdns 1 --caches 3 --ds 1")
    local dir, to_url = sim.dir, sim.to_url
    local sd = stack.tmpdir()
    os.execute("mkdir -p " .. sq(sd .. "/mappings"))
    local mpath = write(sd .. "/mappings/custom.lua", "return require 'mappings.cachestats'\n")
    local cfg = write(dir .. "/config.lua", ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  polling_interval = 1, publishing_interval = 3600,
  state_dir = %q, script_dir = %q,
  collect = { timeout = 0.5, connect_timeout = 0.5 },
  summary = { enabled = false },
  endpoints = { { name = "Custom", path = "/publish/CacheStats", format = "tm_cachestats",
                  mapping = "mappings.custom", db = "custom_db", rp = "daily" } },
}]]):format(to_url, dir .. "/state", sd))
    local ts = stack.spawn("exec " .. tstats .. " --config " .. cfg .. " run", dir .. "/tstats.log")
    local function log() return stack.read_file(dir .. "/tstats.log") or "" end
    local function count(pat) return select(2, log():gsub(pat, "")) end
    -- both CacheStats endpoints (stock and custom) collect every poll
    assert.truthy(stack.wait_until(function() return count("Collected 120 cache stats values") >= 4 end, 20, 0.2), log())
    write(mpath, "return {\n  entity = function(\n")   -- a syntax error on line 3
    ts:kill("HUP")
    assert.truthy(stack.wait_until(function() return count("configuration reloaded") >= 1 end, 20, 0.2), log())
    local before = count("Collected 120 cache stats values")
    assert.truthy(stack.wait_until(function() return count("Collected 120 cache stats values") >= before + 4 end, 20, 0.2), log())
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(20))
    local l = log()
    assert.truthy(l:find(mpath .. ":3:", 1, true), "the load error names file:line\n" .. l)
    assert.truthy(l:find("plan endpoint cdn1 Custom: keeping the mapping 'mappings.custom' that is running", 1, true), l)
    -- "reloaded" comes after the new plan, never before it
    assert.truthy(l:find("keeping the mapping", 1, true) < l:find("configuration reloaded", 1, true), l)
    sim:stop()
  end)
end)
