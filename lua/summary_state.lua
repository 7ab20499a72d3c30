-- summary_state.lua (Lua side): when each CDN's daily summary was last stored, so that
-- /metrics says it per CDN and a restart does not forget it. Kept in
-- <state_dir>/summary_last_success.json ({ version = 1, cdns = { [cdn] = unix_s } }), written
-- durably (fsync + rename) after each successful write of a day's rows; read back at start.
local host = require "tstats.host"
local T, log = host.T, host.log

local M = {}

local FILE = "summary_last_success.json"
local last = nil   -- { [cdn] = unix_s }; nil until loaded

local function path()
  local dir = (T().config or {}).state_dir
  if type(dir) ~= "string" or dir == "" then return nil end
  return dir .. "/" .. FILE
end

-- The file's table, or {} when there is none yet; a corrupt file is said, then ignored
-- (the next success rewrites it).
local function read()
  local p = path()
  if not p then return {} end
  local f = io.open(p, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local ok, doc = pcall(require("cjson").decode, text or "")
  if not ok or type(doc) ~= "table" or type(doc.cdns) ~= "table" then
    log("warn", ("daily summary: %s is not a summary state file; the last success per CDN starts empty"):format(p))
    return {}
  end
  local out = {}
  for cdn, t in pairs(doc.cdns) do
    if type(cdn) == "string" and type(t) == "number" then out[cdn] = t end
  end
  return out
end

-- { [cdn] = unix seconds } of every CDN whose summary was ever stored (as far as this
-- state dir knows).
function M.load()
  if not last then last = read() end
  return last
end

-- Records that the rows of `cdns` (a set: { [cdn] = true }) were stored at now_s.
-- Returns true, or nil, err when the file could not be written (the process keeps the
-- times; the next success tries again).
function M.record(cdns, now_s)
  local t = M.load()
  local any = false
  -- Whole milliseconds: cjson writes 14 significant digits, so a finer time would come
  -- back from the file as another number than the one this process exports.
  now_s = math.floor(now_s * 1000 + 0.5) / 1000
  for cdn in pairs(cdns) do t[cdn] = now_s; any = true end
  if not any then return true end
  local p = path()
  if not p then return true end
  local text = require("cjson").encode({ version = 1, cdns = t })
  local write = T()._write_durable
  local ok, err
  if write then
    ok, err = write(p, text .. "\n")
  else
    local f
    f, err = io.open(p, "wb")
    if f then ok = f:write(text, "\n") and f:close() end
  end
  if not ok then
    log("warn", ("daily summary: cannot keep the last success per CDN in %s: %s"):format(p, tostring(err)))
    return nil, err
  end
  return true
end

-- For specs: forget what was loaded.
function M._reset() last = nil end

return M
