-- Spec of the source layout (test side): one header per C module named after
-- its source, no include circle between modules, no C file far above 800
-- lines but the scanner, so a change finds one room to land in.
local function lines_of(path)
  local f = assert(io.open(path, "r"))
  local t = {}
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local function ls(glob)
  local p = assert(io.popen("ls " .. glob .. " 2>/dev/null"))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- module name of a source or header path: src/batch.c, include/ts_batch.h -> batch
local function module_of(path)
  return path:match("^src/(.-)%.c$") or path:match("^include/ts_(.-)%.h$")
end

-- headers without a source of their own: types only, or generated
local HEADER_ONLY = { point = true, embedded = true, version = true }

describe("source layout", function()
  local sources = ls("src/*.c")
  local headers = ls("include/ts_*.h")

  it("has one header per module, named after its source", function()
    local have = {}
    for _, h in ipairs(headers) do have[module_of(h)] = true end
    for _, s in ipairs(sources) do
      local m = module_of(s)
      if m ~= "main" then assert.truthy(have[m], s .. " has no include/ts_" .. m .. ".h") end
    end
    local src = {}
    for _, s in ipairs(sources) do src[module_of(s)] = true end
    for _, h in ipairs(headers) do
      local m = module_of(h)
      assert.truthy(src[m] or HEADER_ONLY[m], h .. " has no src/" .. m .. ".c")
    end
  end)

  it("has no include circle between modules", function()
    -- edges: module -> modules whose headers its source or header includes
    local edges = {}
    local function add(from, path)
      edges[from] = edges[from] or {}
      for _, l in ipairs(lines_of(path)) do
        local inc = l:match('^#include "ts_(.-)%.h"')
        if inc and inc ~= from then edges[from][inc] = true end
      end
    end
    for _, s in ipairs(sources) do add(module_of(s), s) end
    for _, h in ipairs(headers) do add(module_of(h), h) end
    local state = {}
    local function visit(m, stack)
      if state[m] == "done" then return end
      if state[m] == "open" then error("include circle: " .. table.concat(stack, " -> ") .. " -> " .. m, 0) end
      state[m] = "open"
      stack[#stack + 1] = m
      for n in pairs(edges[m] or {}) do visit(n, stack) end
      stack[#stack] = nil
      state[m] = "done"
    end
    for m in pairs(edges) do visit(m, {}) end
  end)

  -- The scanner is one state machine on purpose; every other file keeps
  -- within the budget.
  local OVER = { ["src/scan.c"] = true }
  it("keeps every C file within ~800 lines but the listed ones", function()
    for _, s in ipairs(sources) do
      if not OVER[s] then
        local n = #lines_of(s)
        assert.truthy(n <= 850, s .. " has " .. n .. " lines")
      end
    end
  end)
end)
