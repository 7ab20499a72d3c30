-- lua_errors_spec.lua: runtime spec (test side). Budget and memory errors of a mapping's calls
-- name the module (and its endpoint) and the file:line of the Lua function that was running,
-- in the daemon's poll path (`tstats poll --dry-run` against the simulator) and in `tstats script`.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local sim_bin = stack.bin("tstats-sim")
local q = stack.quote

describe("Lua budget and memory errors name the module and file:line #asan", function()
  local tmp, sim, to_url
  setup(function()
    tmp = stack.tmpdir()
    local ready = tmp .. "/ready.json"
    sim = stack.spawn("exec " .. sim_bin .. " --ready-file " .. q(ready) .. " --cdns 1 --caches 3 --ds 1",
      tmp .. "/sim.log")
    assert(stack.wait_until(function() local s = stack.read_file(ready); return s and #s > 0 end, 15, 0.05))
    to_url = cjson.decode(stack.read_file(ready)).to_url
  end)
  teardown(function() stack.cleanup_all() end)

  local function run_mapping(name, body, lua_opts)
    local sd = tmp .. "/" .. name
    os.execute("mkdir -p " .. q(sd .. "/mappings"))
    stack.write_file(sd .. "/mappings/cachestats.lua", body)
    local cfg = sd .. "/config.lua"
    stack.write_file(cfg, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 3 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  state_dir = %q, script_dir = %q,
  collect = { timeout = 2, connect_timeout = 1 },
  summary = { enabled = false },
  lua = { %s },
}]]):format(to_url, sd .. "/state", sd, lua_opts))
    local rc, out, err = stack.run(q(tstats) .. " --config " .. q(cfg) .. " poll --dry-run", { timeout = 60 })
    return rc, out, err, sd .. "/mappings/cachestats.lua"
  end

  -- The error lines of the mapping: "... mappings.cachestats [cdn1 CacheStats] <fn>("<name>"): <file>:<line>: ..."
  local function error_lines(err, needle)
    local lines = {}
    for l in err:gmatch("[^\n]+") do if l:find(needle, 1, true) then lines[#lines + 1] = l end end
    return lines
  end

  it("a stat() that loops: the instruction budget error names the module, the endpoint and file:line", function()
    local rc, _, err, file = run_mapping("loop", table.concat({
      "local M = {}",
      "function M.entity() return { measurement_tags = {} } end",
      "local function spin()",
      "  local n = 0",
      "  while true do n = n + 1 end",      -- line 5
      "end",
      "function M.stat() return spin() end",
      "return M", "" }, "\n"), "hook_budget = 100000")
    local lines = error_lines(err, "script exceeded its instruction budget")
    print(("budget: exit %d, %d budget error lines; first: %s"):format(rc, #lines, lines[1] or "(none)"))
    assert.truthy(#lines > 0, err)
    for _, l in ipairs(lines) do
      assert.truthy(l:find("mappings.cachestats [cdn1 CacheStats] stat(\"", 1, true), l)
      assert.truthy(l:find(file .. ":5: script exceeded its instruction budget (in spin)", 1, true)
        or l:find(file .. ":5: script exceeded its instruction budget (in ", 1, true), l)
    end
  end)

  it("an entity() that allocates without bound: the memory error names the module, the endpoint and file:line", function()
    local rc, _, err, file = run_mapping("hog", table.concat({
      "local M = {}",
      "local keep = {}",
      "local function hog(name)",
      "  for i = 1, 1e9 do keep[#keep + 1] = name .. (\"x\"):rep(64) .. i end",   -- line 4
      "end",
      "function M.entity(name) hog(name) return { measurement_tags = {} } end",
      "function M.stat() return nil end",
      "return M", "" }, "\n"), "memory_limit = 24 * 1024 * 1024, hook_budget = 1000000000")
    local lines = error_lines(err, "not enough memory")
    print(("memory: exit %d, %d memory error lines; first: %s"):format(rc, #lines, lines[1] or "(none)"))
    assert.truthy(#lines > 0, err)
    -- the first one at least is caught by the hook (later ones may find the heap still full)
    local l = lines[1]
    assert.truthy(l:find("mappings.cachestats [cdn1 CacheStats] entity(\"", 1, true), l)
    assert.truthy(l:find(file .. ":4: not enough memory: lua.memory_limit (24.0 MiB) reached (in ", 1, true), l)
    assert.falsy(err:find("Segmentation", 1, true), err)
  end)

  it("tstats script: the memory error names file:line of the running function", function()
    local script = tmp .. "/hog.lua"
    stack.write_file(script, table.concat({
      "local function grow()",
      "  local t = {} for i = 1, 1e9 do t[i] = (\"x\"):rep(40) .. i end",   -- line 2
      "end",
      "grow()", "return 0", "" }, "\n"))
    local cfg = tmp .. "/script.lua"
    stack.write_file(cfg, ([[
return { traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { "http://127.0.0.1:1" } },
  state_dir = %q, summary = { enabled = false }, lua = { memory_limit = 16 * 1024 * 1024 } }]]):format(tmp .. "/st"))
    local rc, _, err = stack.run(q(tstats) .. " --config " .. q(cfg) .. " script " .. q(script), { timeout = 60 })
    print(("script: exit %d: %s"):format(rc, err:match("[^\n]*not enough memory[^\n]*") or err))
    assert.are_not.equal(0, rc)
    assert.truthy(err:find(script .. ":2: not enough memory: lua.memory_limit (16.0 MiB) reached (in grow)", 1, true)
      or err:find("hog.lua:2: not enough memory: lua.memory_limit (16.0 MiB) reached (in grow)", 1, true), err)
  end)
end)
