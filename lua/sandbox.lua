-- The mapping sandbox (Lua side): mapping modules run inside the poll (in
-- curl's write callback), so they get an allow-list environment, as Redis
-- gives its scripts: pure functions of strings, tables and math, logging and
-- counters, and no I/O, no blocking, no loading of code outside it. A module
-- a mapping requires is loaded into the same sandbox. Forbidden names raise a
-- clear error; the caller (C) logs it and counts it, and the poll goes on.
local S = {}

local FORBIDDEN_GLOBAL = {
  io = "file and process I/O", debug = "the debug library", load = "loading code", loadfile = "loading code",
  dofile = "loading code", package = "the module system", collectgarbage = "the garbage collector",
  print = "writing to stdout (use tstats.info)",
}
local FORBIDDEN_TSTATS = {
  http = "HTTP requests", influx = "InfluxDB requests", pg = "PostgreSQL", sleep = "sleeping",
  _influx_post = "InfluxDB requests", _queue_points = "the writer queue", _encode_points = "the writer queue",
}
local OS_ALLOWED = { time = true, clock = true, date = true, difftime = true }

local WHY = "mapping modules run inside the poll; do I/O in a script (tstats script)"

local function refuse(what, why)
  error(("%s is not available in a mapping module (%s: %s)"):format(what, why, WHY), 3)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- A read-through view of lib where `forbidden` names raise; writes stay local.
local function guarded(lib, prefix, forbidden, allowed)
  return setmetatable({}, { __index = function(_, k)
    if allowed and not allowed[k] then refuse(prefix .. tostring(k), "not on the allow-list") end
    if forbidden and forbidden[k] then refuse(prefix .. tostring(k), forbidden[k]) end
    return lib[k]
  end })
end

function S.new()
  local tstats = require "tstats"
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    xpcall = xpcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawget = rawget, rawlen = rawlen, rawset = rawset, setmetatable = setmetatable,
    -- the string metatable is shared with the daemon: a mapping must not reach it
    getmetatable = function(v) if type(v) == "string" then return nil end return getmetatable(v) end,
    _VERSION = _VERSION,
    string = copy(string), table = copy(table), math = copy(math), utf8 = copy(utf8),
    os = guarded(os, "os.", nil, OS_ALLOWED),
  }
  local loaded = { tstats = guarded(tstats, "tstats.", FORBIDDEN_TSTATS), cjson = require "cjson" }
  loaded.string, loaded.table, loaded.math, loaded.utf8, loaded.os =
    env.string, env.table, env.math, env.utf8, env.os
  env.tstats = nil   -- as outside: reached by require "tstats"
  env._G = env

  -- package.preload (what the host itself installed: tests), then the Lua
  -- file searchers (script_dir, embedded, package.path); never a C library,
  -- which would run outside the sandbox.
  local function find_loader(name)
    local msgs = {}
    for i, searcher in ipairs(package.searchers) do
      if i <= 3 then
        local loader, extra = searcher(name)
        if type(loader) == "function" then return loader, extra, i == 1 end
        if type(loader) == "string" then msgs[#msgs + 1] = loader end
      end
    end
    error(("module '%s' not found:%s"):format(name, table.concat(msgs)), 3)
  end

  function env.require(name)
    if type(name) ~= "string" then error("require: module name must be a string", 2) end
    local m = loaded[name]
    if m ~= nil then return m end
    local loader, extra, preloaded = find_loader(name)
    if not preloaded then
      -- a Lua file's main chunk has _ENV as its first upvalue
      if debug.getupvalue(loader, 1) ~= "_ENV" then error(("module '%s' is not a Lua chunk"):format(name), 2) end
      debug.setupvalue(loader, 1, env)
    end
    m = loader(name, extra)
    if m == nil then m = true end
    loaded[name] = m
    return m
  end

  setmetatable(env, { __index = function(_, k)
    if FORBIDDEN_GLOBAL[k] then refuse("'" .. k .. "'", FORBIDDEN_GLOBAL[k]) end
    return nil
  end })
  return { env = env, require = env.require }
end

-- The process's sandbox: one per load of this module (a SIGHUP reloads the
-- scripts, and with them this module and its cache of mapping modules).
local current
function S.require(name)
  current = current or S.new()
  return current.require(name)
end

return S
