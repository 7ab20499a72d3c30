-- Access to the host API for pure-Lua modules (Lua side): the C core provides
-- `tstats` as a global (and as a module); specs inject a stand-in global, so
-- it is looked up at call time, and logging never raises.
local host = {}

function host.T()
  local ts = rawget(_G, "tstats")
  if ts == nil then ts = require "tstats" end
  return ts
end

function host.log(level, msg)
  local f = host.T()[level]
  if type(f) == "function" then pcall(f, msg) end
end

function host.count(name, n)
  local f = host.T().count
  if type(f) == "function" then pcall(f, name, n or 1) end
end

return host
