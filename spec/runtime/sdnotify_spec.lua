-- Runtime spec (issue "Run it as a service"): the systemd notification protocol as tstats
-- speaks it, heard on an AF_UNIX datagram socket of the test's own (NOTIFY_SOCKET), the way
-- systemd listens: READY=1 at start, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on
-- SIGTERM, WATCHDOG=1 pings when WATCHDOG_USEC is set and none when it is not.
-- Test side, Lua; the listener is a few lines of /usr/bin/python3.
local stack = require "spec.runtime.stack"

local q = stack.quote
local tstats_bin = stack.bin("tstats")

-- Binds SOCK_DGRAM at path and appends each datagram, then a line "--", to log.
local LISTENER = [[
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[1] + ".bound", "w").close()
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(4096) + b"\n--\n")
]]

local function listen(dir)
  local sock, log = dir .. "/notify.sock", dir .. "/notify.log"
  stack.write_file(dir .. "/listen.py", LISTENER)
  stack.write_file(log, "")
  local h = stack.spawn("exec /usr/bin/python3 " .. q(dir .. "/listen.py") .. " " .. q(sock) .. " " .. q(log), dir .. "/listener.out")
  assert(stack.wait_until(function() return stack.read_file(sock .. ".bound") end, 10, 0.05), "listener did not bind")
  h.sock = sock
  function h.messages()
    local out = {}
    for m in (stack.read_file(log) or ""):gmatch("(.-)\n%-%-\n") do out[#out + 1] = m end
    return out
  end
  -- index of the first message after `from` containing s, or nil
  function h.find(s, from)
    local ms = h.messages()
    for i = (from or 0) + 1, #ms do
      if ms[i]:find(s, 1, true) then return i end
    end
  end
  return h
end

local function start_sim(dir) return stack.sim_start("--caches 4 --ds 2", { dir = dir }) end

local function config(dir, to_url)
  -- InfluxDB is a closed port: notifications do not depend on writes.
  return stack.write_config(dir .. "/config.lua", { to_url = to_url,
    influx_url = "http://127.0.0.1:" .. stack.free_port(), state_dir = dir .. "/state", collect = false })
end

describe("sd_notify #asan", function()
  local tmp, sim
  setup(function()
    tmp = stack.tmpdir()
    sim = start_sim(tmp)
  end)
  teardown(function() stack.cleanup_all() end)

  it("says READY, RELOADING then READY on SIGHUP, STOPPING on SIGTERM, and pings the watchdog", function()
    local dir = stack.tmpdir()
    local l = listen(dir)
    local d = stack.spawn(tstats_bin .. " --config " .. q(config(dir, sim.info.to_url)) .. " run", dir .. "/tstats.log",
      { env = { NOTIFY_SOCKET = l.sock, WATCHDOG_USEC = "400000" } })
    local ready = stack.wait_until(function() return l.find("READY=1") end, 20)
    assert.truthy(ready, "READY=1: " .. table.concat(l.messages(), " | "))
    -- pings at half of WATCHDOG_USEC: several within 2 s, from the running loop
    local pings = stack.wait_until(function()
      local n = 0
      for _, m in ipairs(l.messages()) do if m == "WATCHDOG=1" then n = n + 1 end end
      return n >= 4 and n
    end, 10)
    assert.truthy(pings, "WATCHDOG=1 pings: " .. table.concat(l.messages(), " | "))
    -- the daemon is polling for real (the sim saw CacheStats requests)
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(dir .. "/tstats.log") or ""):find("Collected %d+ cache stats values")
    end, 20), stack.read_file(dir .. "/tstats.log"))

    local before = #l.messages()
    d:kill("HUP")
    local rel = stack.wait_until(function() return l.find("RELOADING=1", before) end, 10)
    assert.truthy(rel, "RELOADING=1 after SIGHUP")
    assert.truthy(l.messages()[rel]:find("MONOTONIC_USEC=%d+"), l.messages()[rel])
    local again = stack.wait_until(function() return l.find("READY=1", rel) end, 10)
    assert.truthy(again, "READY=1 after the reload")

    before = #l.messages()
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), "clean exit")
    assert.truthy(l.find("STOPPING=1", before), "STOPPING=1 after SIGTERM: " .. table.concat(l.messages(), " | "))
    l:stop()
  end)

  it("a rejected reload is answered with READY (still running the old configuration)", function()
    local dir = stack.tmpdir()
    local l = listen(dir)
    local cfg = config(dir, sim.info.to_url)
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", dir .. "/tstats.log",
      { env = { NOTIFY_SOCKET = l.sock } })
    assert.truthy(stack.wait_until(function() return l.find("READY=1") end, 20))
    stack.write_file(cfg, "return { nonsense_key = 1 }\n")
    local before = #l.messages()
    d:kill("HUP")
    local rel = stack.wait_until(function() return l.find("RELOADING=1", before) end, 10)
    assert.truthy(rel)
    local back = stack.wait_until(function() return l.find("READY=1", rel) end, 10)
    assert.truthy(back)
    assert.truthy(l.messages()[back]:find("rejected", 1, true), l.messages()[back])
    -- no WATCHDOG_USEC: no pings
    for _, m in ipairs(l.messages()) do assert.are_not.equal("WATCHDOG=1", m) end
    d:kill("TERM")
    assert.are.equal(0, d:wait(30))
    l:stop()
  end)
end)
