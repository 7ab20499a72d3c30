-- fault_tm_spec.lua: fault 7 of the fault suite (test side). Every Traffic Monitor fault the
-- simulator has, on one monitor of a CDN and on all of them, and Traffic Ops down at start,
-- down during a refresh and slow; table-driven against one running daemon (two CDNs, two
-- monitors each). Each row says what it expects (failover with no skipped timeslot, or every
-- slot of that CDN skipped and said), counts the log lines, and checks the other CDN kept
-- every timeslot, the daemon's RSS stayed bounded and it exited 0 at the end.
local stack = require "spec.runtime.stack"
local q = stack.quote

local tstats_bin = stack.bin("tstats")

local FAULT_S = 4          -- each fault is on this long
local MAX_PAYLOAD = 2 * 1024 * 1024
local RSS_SLACK_KB = 32 * 1024   -- peak RSS may exceed the pre-fault peak by at most this

local function kb(pid, key)
  local s = stack.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match(key .. ":%s*(%d+)")) or 0
end

local function count(text, pat)
  local n = 0
  for _ in text:gmatch(pat) do n = n + 1 end
  return n
end

local function sim_post(to_url, query)
  local rc, out = stack.run("curl -sS -m 5 -XPOST " .. q(to_url .. "/sim/fault?" .. query))
  assert(rc == 0 and out:find('"ok":true', 1, true), "sim fault " .. query .. ": " .. tostring(out))
end

-- One row per Traffic Monitor fault: kind (with its argument), the reason tstats must log.
-- on_one: the fault on cdn1's monitor 0 (failover to monitor 1); on_all: on every monitor of cdn1.
local TM_FAULTS = {
  { kind = "503",             why = "HTTP 503" },
  { kind = "hang",            why = "Operation timed out after" },
  { kind = "slow:3000",       why = "Operation timed out after" },
  { kind = "cut",             why = "transfer closed with" },
  { kind = "truncate",        why = "unparsable body" },
  { kind = "invalid",         why = "unparsable body" },
  { kind = "dead",            why = "Couldn't connect to server" },
  { kind = "503-start:3",     why = "HTTP 503" },
  -- last among the one-monitor rows: it fails CacheStats over but not DsStats
  { kind = "huge:6",          why = "answer larger than collect.max_payload_bytes", cache_only = true },
}

describe("fault suite: Traffic Monitor and Traffic Ops faults", function()
  teardown(function() stack.cleanup_all() end)

  it("7. every simulator fault on one monitor and on all of a CDN's, and Traffic Ops faults", function()
    local tmp = stack.tmpdir()
    local sim = stack.sim_start("--cdns 2 --monitors-per-cdn 2 --caches 10 --ds 2 --payload-cache-ms 0 --poll-ms 250",
      { dir = tmp })
    local to_url = sim.to_url
    local cfg = tmp .. "/config.lua"
    -- collect.timeout below half the interval: a failed monitor leaves time for the second
    stack.write_file(cfg, ([[
return {
  traffic_ops = { url = %q, user = "admin", password = "twelve12", timeout = 1.5 },
  influxdb = { urls = { "http://127.0.0.1:1" } },
  polling_interval = 1, publishing_interval = 3600, config_interval = 3600,
  state_dir = %q,
  collect = { timeout = 0.45, connect_timeout = 0.3, max_payload_bytes = %d },
  summary = { enabled = false },
  -- InfluxDB is dead on purpose: SIGTERM's drain retries it until this bound, which
  -- must stay well inside the 10 s that stack's stop() waits (the default is 10 s too)
  shutdown_timeout = 3,
}]]):format(to_url, tmp .. "/state", MAX_PAYLOAD))
    local log = tmp .. "/tstats.log"
    local function text() return stack.read_file(log) or "" end
    local results = {}
    local function row(r) results[#results + 1] = r end

    -- Traffic Ops down at start: retried, polling starts soon after it is back
    sim_post(to_url, "spec=to-down@to")
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    stack.sleep(3)
    local waiting = count(text(), "no Traffic Ops data yet")
    local polled_while_down = count(text(), "Collected %d+ cache stats values")
    sim_post(to_url, "monitor=to&kind=none")
    local t_back = stack.now()
    assert(stack.wait_until(function() return text():find("Collected %d+ cache stats values for cdn2") end, 20, 0.1),
      text())
    local start_s = stack.now() - t_back
    row { fault = "TO down at start (3 s)", target = "to", lines = waiting,
          note = ("polling began %.1f s after TO came back"):format(start_s) }
    assert.are.equal(0, polled_while_down)
    assert.are.equal(1, waiting, "one warning while TO is down at start")
    -- start-up retries are at most 4 s apart, then the next poll tick (1 s), and slack for the load
    assert.truthy(start_s < 7, "polling began " .. start_s .. " s after TO was back")
    stack.sleep(2)
    local rss0 = kb(d.pid, "VmHWM")
    local peak = 0

    -- a window of FAULT_S s with the fault, then 2 s to recover; returns the window's log
    local function window(apply, clear)
      local from = #text()
      local t0 = stack.now()
      apply()
      while stack.now() < t0 + FAULT_S do peak = math.max(peak, kb(d.pid, "VmRSS")); stack.sleep(0.25) end
      local during = text():sub(from + 1)
      clear()
      stack.sleep(2.5)
      assert.truthy(d:alive(), "the daemon is alive")
      return during, text():sub(from + 1)
    end

    local function slots(w, cdn, ep) return count(w, "Collected %d+ " .. ep .. " values for " .. cdn .. " ") end

    -- failover remembers the monitor that answered: each fault goes on the one in use
    local cur = 0
    for _, f in ipairs(TM_FAULTS) do
      -- on one monitor: failover, no timeslot skipped, one line per endpoint it hit
      local target = "cdn1:" .. cur
      local during, all = window(function() sim_post(to_url, "spec=" .. f.kind .. "@" .. target) end,
        function() sim_post(to_url, "monitor=" .. target .. "&kind=none") end)
      cur = 1 - cur
      local c1, c2 = slots(during, "cdn1", "cache stats"), slots(during, "cdn2", "cache stats")
      local d1 = slots(during, "cdn1", "deliveryservice stats")
      local fails = count(all, "WARN failed to get cdn1 ")
      local with_why = count(all, "WARN failed to get cdn1 [%w]+: [^\n]-" .. f.why:gsub("%p", "%%%0"))
      local skipped = count(all, "cdn1 [%w]+: previous poll still running") + count(all, "unable to get any cdn1")
      local other = count(all, "failed to get cdn2") + count(all, "cdn2 [%w]+: previous poll") + count(all, "any cdn2")
      local first = all:match("WARN failed to get cdn1 [%w]+: ([^\n]-) %(monitor") or "-"
      row { fault = f.kind, target = target, lines = fails, skipped = skipped,
            note = ("cdn1 polls %d cache / %d ds, cdn2 %d; cdn2 lines %d; said: %s"):format(c1, d1, c2, other, first) }
      local eps = f.cache_only and 1 or 2
      assert.truthy(fails >= 1 and fails <= eps, f.kind .. "@" .. target .. ": failure lines " .. fails .. "\n" .. all)
      assert.are.equal(fails, with_why, f.kind .. ": the reason is said\n" .. all)
      assert.are.equal(0, skipped, f.kind .. "@" .. target .. ": no timeslot skipped\n" .. all)
      assert.truthy(c1 >= c2 - 1 and c2 >= FAULT_S - 1, f.kind .. "@" .. target .. ": cdn1 " .. c1 .. " cdn2 " .. c2)
      assert.are.equal(0, other, "cdn2 unaffected\n" .. all)
    end

    for _, f in ipairs(TM_FAULTS) do
      if not f.kind:find("^503%-start") then
        -- on every monitor of cdn1: its timeslots are skipped, one error line each; cdn2 unaffected
        local during, all = window(function() sim_post(to_url, "spec=" .. f.kind .. "@cdn1") end,
          function() sim_post(to_url, "monitor=cdn1&kind=none") end)
        local c2 = slots(during, "cdn2", "cache stats")
        local skipped = count(during, "unable to get any cdn1 CacheStats URL %- skipping timeslot")
          + count(during, "cdn1 CacheStats: previous poll still running")
        local warned = count(during, "WARN failed to get cdn1 CacheStats")
        local recovered = slots(all:sub(#during + 1), "cdn1", "cache stats")
        local other = count(all, "failed to get cdn2") + count(all, "cdn2 [%w]+: previous poll") + count(all, "any cdn2")
        row { fault = f.kind, target = "cdn1 (both)", lines = skipped, skipped = skipped,
              note = ("%d monitor warnings; cdn2 polls %d; cdn1 polls after clearing %d"):format(warned, c2, recovered) }
        assert.truthy(skipped >= FAULT_S - 2, f.kind .. "@cdn1: skipped slots said: " .. skipped .. "\n" .. all)
        assert.truthy(warned <= 2 * skipped + 2, f.kind .. "@cdn1: one warning per monitor tried\n" .. all)
        assert.truthy(c2 >= FAULT_S - 1, f.kind .. "@cdn1: cdn2 polls " .. c2)
        assert.truthy(recovered >= 1, f.kind .. "@cdn1: cdn1 polled again after the fault\n" .. all)
        assert.are.equal(0, other, "cdn2 unaffected\n" .. all)
      end
    end

    -- Traffic Ops down during a refresh (SIGHUP), and slow (answers after traffic_ops.timeout)
    for _, f in ipairs({ { kind = "to-down", why = "Traffic Ops" }, { kind = "to-slow:4000", why = "Traffic Ops" } }) do
      local during, all = window(function() sim_post(to_url, "spec=" .. f.kind .. "@to"); d:kill("HUP") end,
        function() sim_post(to_url, "monitor=to&kind=none") end)
      local c1, c2 = slots(during, "cdn1", "cache stats"), slots(during, "cdn2", "cache stats")
      local lines = count(all, "Traffic Ops refresh failed") + count(all, "Traffic Ops unavailable")
      local skipped = count(all, "previous poll still running") + count(all, "unable to get any")
      row { fault = f.kind .. " during a refresh", target = "to", lines = lines, skipped = skipped,
            note = ("cdn1 polls %d, cdn2 %d while TO was faulty"):format(c1, c2) }
      assert.truthy(lines >= 1 and lines <= 2, f.kind .. ": lines " .. lines .. "\n" .. all)
      assert.are.equal(0, skipped, all)
      assert.truthy(c1 >= FAULT_S - 1 and c2 >= FAULT_S - 1, f.kind .. ": polls went on\n" .. all)
    end

    local hwm = kb(d.pid, "VmHWM")
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    print("fault 7 (one daemon, 2 CDNs x 2 monitors, 10 caches + 2 DS each, 1 s polls, collect.timeout 0.45 s):")
    for _, r in ipairs(results) do
      print(("  %-28s on %-11s lines %2d  skipped %2s  %s"):format(r.fault, r.target, r.lines, tostring(r.skipped or "-"), r.note))
    end
    print(("  RSS: peak %d kB before the faults, %d kB sampled during them, VmHWM %d kB at the end"):format(rss0, peak, hwm))
    assert.truthy(hwm <= rss0 + RSS_SLACK_KB, ("VmHWM %d kB vs %d kB before the faults"):format(hwm, rss0))
    sim:stop()
  end)
end)
