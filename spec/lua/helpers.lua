-- Shared helpers of the pure-Lua specs (test side): fixture reading and deep
-- copies, so each spec file does not carry its own.
local H = {}

H.FIX = "spec/fixtures/"

-- The bytes of spec/fixtures/<path>.
function H.read(path)
  local f = assert(io.open(H.FIX .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function H.deepcopy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = H.deepcopy(x) end
  return t
end

return H
