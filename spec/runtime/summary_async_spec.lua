-- summary_async_spec.lua: the daily summary never stalls the poll loop (test side). Real
-- PostgreSQL 15 (scripts/lib/pg.sh), influxd and the simulator with two CDNs: the summary is
-- held inside its stats_summary transaction (an advisory lock another session owns), then every
-- PostgreSQL process is stopped with SIGSTOP (a hung server: no error, and no statement_timeout
-- set) and later continued. Meanwhile every CDN is polled every second and every polled point is
-- stored; the hung statement is given up after postgres.call_timeout and cancelled (its backend
-- goes once the server runs again, the lock still held); afterwards the day is done once. The
-- same with influxd SIGSTOPped while the summary queries it. And a SIGTERM while the summary
-- waits abandons it at once and cancels its statement; the next start does the day, once.
local stack = require "spec.runtime.stack"
local q = stack.quote

local tstats_bin = stack.bin("tstats")

-- unix seconds of each "Collected N cache stats values for CDN @ T" line, by CDN
local function poll_times(text)
  local by = {}
  for cdn, t in text:gmatch("Collected %d+ cache stats values for (%S+) @ (%d+)") do
    by[cdn] = by[cdn] or {}
    table.insert(by[cdn], tonumber(t))
  end
  return by
end

-- polls of times within [a, b] and the longest gap between consecutive ones there, the
-- window's edges counting as polls just outside it (a - 1, b + 1)
local function window(times, a, b)
  local n, gap, prev = 0, 0, a - 1
  for _, t in ipairs(times or {}) do
    if t >= a and t <= b then
      n = n + 1
      if t - prev > gap then gap = t - prev end
      prev = t
    end
  end
  if b + 1 - prev > gap then gap = b + 1 - prev end
  return n, gap
end

-- each CDN's polls in the whole seconds strictly inside a hang from t0 to t1 (a poll at each
-- of them is due): { cdns = sorted names, [cdn] = { n =, gap = }, seconds =, text = a summary }
local function hang_polls(log_text, t0, t1)
  local by, a, b = poll_times(log_text), t0 + 1, t1 - 1
  local r, report = { cdns = {}, seconds = b - a + 1 }, {}
  for cdn in pairs(by) do r.cdns[#r.cdns + 1] = cdn end
  table.sort(r.cdns)
  for _, cdn in ipairs(r.cdns) do
    local n, gap = window(by[cdn], a, b)
    r[cdn] = { n = n, gap = gap }
    report[#report + 1] = ("%s %d polls in %d s (longest gap %d s)"):format(cdn, n, r.seconds, gap)
  end
  r.text = table.concat(report, "; ")
  return r
end

-- both CDNs polled each second of the hang: at most one poll missing, no gap over 2 s
local function assert_each_second(polls)
  assert.are.equal(2, #polls.cdns)
  for _, cdn in ipairs(polls.cdns) do
    local p = polls[cdn]
    assert.truthy(p.n >= polls.seconds - 1, cdn .. ": " .. p.n .. " polls in " .. polls.seconds .. " s")
    assert.truthy(p.gap <= 2, cdn .. ": a gap of " .. p.gap .. " s between polls")
  end
end

-- every process of the cluster: the postmaster (first line of postmaster.pid) and its children
local function pg_pids(pg)
  local pm = (stack.read_file(pg.dir .. "/data/postmaster.pid") or ""):match("^(%d+)")
  assert(pm, "no postmaster.pid")
  local _, out = stack.run("pgrep -P " .. pm)
  local pids = { pm }
  for p in out:gmatch("%d+") do pids[#pids + 1] = p end
  return pids
end

local function signal_all(pids, sig)
  os.execute("kill -" .. sig .. " " .. table.concat(pids, " ") .. " 2>/dev/null")
end

local function seed(influx, D)
  local lines = {
    ("bandwidth.cdn.1min,cdn=cdn-a value=1000000 %d"):format(D),
    ("bandwidth.cdn.1min,cdn=cdn-a value=4000000 %d"):format(D + 12 * 3600),
    ("bandwidth.cdn.1min,cdn=cdn-b value=7777777 %d"):format(D),
  }
  local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
  assert.are.equal(204, st, body)
end

local function waiting_for_lock(pg) return #stack.pg_lock_waiters(pg) == 1 end

-- influxd, PostgreSQL, a tmpdir and the day to summarize, its cache_stats seeded
local function day_stack()
  local influx = stack.influxd_start_atc()
  local pg = stack.pg_start()
  local tmp = stack.tmpdir()
  local D, Ddate, Dpat = stack.summary_day()
  seed(influx, D)
  return influx, pg, tmp, Ddate, Dpat
end

-- the daemon on cfg, logging to tmp/name: its handle and a reader of its log
local function start_daemon(cfg, tmp, name)
  local log = tmp .. "/" .. name
  local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
  finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
  return d, function() return stack.read_file(log) or "" end, log
end

local function config(tmp, sim, influx, pg, extra)
  return stack.write_config(tmp .. "/config.lua", {
    to_url = sim.to_url, influx_url = influx.url, state_dir = tmp .. "/state",
    collect = "timeout = 0.5, connect_timeout = 0.5",
    summary = '{ sinks = { "pg" }, rollups = { "daily" }, grace = 600 }',
    -- no server-side bound at all: only call_timeout ends a hung statement; "localhost": the
    -- host name is looked up off the loop (and the connection made to its address)
    extra = ("daily_summary_interval = 1, shutdown_timeout = 5, postgres = { conninfo = %q, statement_timeout = 0, "
      .. "call_timeout = 5 },%s"):format(pg.conninfo:gsub("@127%.0%.0%.1:", "@localhost:") .. "?connect_timeout=2",
      extra or ""),
  })
end

local summary_rows = stack.summary_rows

describe("the daily summary on the loop #asan", function()
  teardown(function() stack.cleanup_all() end)

  it("PostgreSQL hung (SIGSTOP) during a summary: every CDN polled each second, every point stored, the day done once",
    function()
    local influx, pg, tmp, Ddate, Dpat = day_stack()
    local locker = stack.pg_hold_lock(pg, tmp)
    -- --poll-ms 250, no payload cache: a sample time never repeats between two polls a second
    -- apart, so every polled point is a distinct point in InfluxDB
    local sim = stack.sim_start("--cdns 2 --caches 3 --ds 1 --payload-cache-ms 0 --poll-ms 250")
    local d, text, log = start_daemon(config(tmp, sim, influx, pg), tmp, "tstats.log")

    assert(stack.wait_until(function() return waiting_for_lock(pg) end, 30, 0.2),
      "the summary never reached its transaction:\n" .. text())
    local hung_backend = stack.pg_lock_waiters(pg)[1]
    local pids = pg_pids(pg)
    signal_all(pids, "STOP")
    local stopped = true
    finally(function() if stopped then signal_all(pids, "CONT") end end)
    local t0 = os.time()
    stack.sleep(12)      -- call_timeout (5 s) and reconnects (connect_timeout 2) inside it
    local t1 = os.time()
    signal_all(pids, "CONT")
    stopped = false
    -- the cancel request sent when the statement was given up reaches the server now: that
    -- backend goes while the lock is still held (uncancelled, it would wait for the lock, its
    -- client long gone, until the lock went)
    local t_cont = stack.now()
    local function alive(pid)
      return pid and pg:psql(("SELECT count(*) FROM pg_stat_activity WHERE pid = %d"):format(pid)):match("^%s*1")
    end
    local cancelled = stack.wait_until(function() return not alive(hung_backend) end, 10, 0.2)
    local cancel_s = stack.now() - t_cont
    local cancel_line = text():match("[^\n]*the server has the cancel request for backend " .. tostring(hung_backend)
      .. "[^\n]*") or "none"
    local hung_text = text()
    stack.pg_release_lock(pg, locker)
    assert(stack.wait_until(function() return text():find("daily summary for " .. Ddate .. " done", 1, true) end, 40, 0.2),
      text())
    stack.sleep(3)       -- later ticks must not do the day again
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    sim:stop()

    local polled, stored = stack.polled(log), stack.stored(influx.url)
    local total, day, dups = summary_rows(pg, Ddate)
    local done = select(2, text():gsub("daily summary for " .. Dpat .. " done", ""))
    local dropped = select(2, hung_text:gsub("no answer within %d+ ms; the connection is dropped and its statement "
      .. "cancelled", ""))
    local looked_up = text():match("[^\n]*pg: connecting to localhost at [^\n]*") or "none"
    local skipped = hung_text:match("[^\n]*daily summary still running[^\n]*") or "none"
    local polls = hang_polls(text(), t0, t1)
    print(("summary hung: every PostgreSQL process stopped for %d s while the summary of %s waited in its "
      .. "transaction (statement_timeout 0, call_timeout 5): %s; the summary gave up %d time(s) ('no answer ... "
      .. "dropped and its statement cancelled'); the hung backend %s gone %.1f s after SIGCONT, the lock still held "
      .. "(%s); lookup: %s; skipped-tick line: %s; polled %d points, stored %d; the day was done %d time(s), "
      .. "stats_summary %d rows (%d for the day), %d duplicated keys"):format(t1 - t0, Ddate, polls.text,
      dropped, tostring(hung_backend), cancelled and cancel_s or -1, cancel_line:sub(1, 160), looked_up:sub(1, 160),
      skipped:sub(1, 200), polled, stored, done, total, day, dups))
    -- one poll a second; a loop waiting on PostgreSQL would leave a gap of the statement's bound (5 s)
    assert_each_second(polls)
    assert.truthy(polled > 0)
    assert.are.equal(polled, stored)
    assert.truthy(dropped >= 1, "the hung statement was given up:\n" .. hung_text)
    assert.truthy(cancelled, "the given-up statement's backend was cancelled:\n" .. hung_text)
    assert.truthy(cancel_line ~= "none", "the cancel's outcome is logged:\n" .. hung_text)
    assert.truthy(looked_up ~= "none", "localhost looked up off the loop:\n" .. text())
    assert.truthy(skipped ~= "none", "ticks while it ran are skipped and said")
    assert.are.equal(1, done)
    assert.are.equal(4, day)
    assert.are.equal(4, total)
    assert.are.equal(0, dups)
  end)

  it("influxd hung (SIGSTOP) while the summary queries it: every CDN polled each second, the day done once after",
    function()
    local influx, pg, tmp, Ddate, Dpat = day_stack()
    local sim = stack.sim_start("--cdns 2 --caches 3 --ds 1 --payload-cache-ms 0 --poll-ms 250")
    -- influxdb.timeout 4 s: what each of the summary's queries (and each write) waits for a hung server
    local cfg = stack.write_config(tmp .. "/config.lua", {
      to_url = sim.to_url, influx_url = influx.url, influx_extra = "timeout = 4", state_dir = tmp .. "/state",
      collect = "timeout = 0.5, connect_timeout = 0.5",
      summary = '{ sinks = { "pg" }, rollups = { "daily" }, grace = 600 }',
      extra = ("daily_summary_interval = 1, postgres = { conninfo = %q },"):format(pg.conninfo),
    })
    signal_all({ tostring(influx.pid) }, "STOP")
    local stopped = true
    finally(function() if stopped then signal_all({ tostring(influx.pid) }, "CONT") end end)
    local d, text, log = start_daemon(cfg, tmp, "tstats.log")
    assert(stack.wait_until(function() return text():find("Collected %d+ cache stats values") end, 30, 0.2), text())
    local t0 = os.time()
    stack.sleep(10)
    local t1 = os.time()
    signal_all({ tostring(influx.pid) }, "CONT")
    stopped = false
    local hung_text = text()
    assert(stack.wait_until(function() return text():find("daily summary for " .. Ddate .. " done", 1, true) end, 40, 0.2),
      text())
    stack.wait_until(function() return stack.stored(influx.url) >= stack.polled(log) end, 60, 0.5)   -- asserted below
    stack.sleep(2)
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    sim:stop()
    local polled, stored = stack.polled(log), stack.stored(influx.url)
    local total, day, dups = summary_rows(pg, Ddate)
    local done = select(2, text():gsub("daily summary for " .. Dpat .. " done", ""))
    local failed = select(2, hung_text:gsub("daily summary for " .. Dpat .. " failed", ""))
    local first_fail = hung_text:match("[^\n]*daily summary for " .. Dpat .. " failed[^\n]*") or "none"
    local polls = hang_polls(text(), t0, t1)
    print(("summary influxd hung: influxd stopped for %d s from before the start: %s; the summary failed %d time(s) "
      .. "meanwhile (first: %s); polled %d points, stored %d after SIGCONT; the day was done %d time(s), "
      .. "stats_summary %d rows (%d for the day), %d duplicated keys"):format(t1 - t0, polls.text,
      failed, first_fail:sub(1, 220), polled, stored, done, total, day, dups))
    assert_each_second(polls)
    assert.truthy(failed >= 1, "the summary's query waited on the hung influxd:\n" .. hung_text)
    assert.are.equal(polled, stored)
    assert.are.equal(1, done)
    assert.are.equal(4, day)
    assert.are.equal(4, total)
    assert.are.equal(0, dups)
  end)

  it("SIGHUP, then SIGTERM while the summary waits: abandoned within shutdown_timeout, its statement cancelled, the next start does the day once", function()
    local influx, pg, tmp, Ddate, Dpat = day_stack()
    local locker = stack.pg_hold_lock(pg, tmp)
    local sim = stack.sim_start("--cdns 1 --caches 2 --ds 1")
    -- the lock wait is bounded far beyond the test: only the SIGTERM ends it
    local cfg = stack.write_config(tmp .. "/config.lua", {
      to_url = sim.to_url, influx_url = influx.url, state_dir = tmp .. "/state",
      collect = "timeout = 0.5, connect_timeout = 0.5",
      summary = '{ sinks = { "pg" }, rollups = { "daily" }, grace = 600 }',
      extra = ("daily_summary_interval = 1, shutdown_timeout = 5, postgres = { conninfo = %q, statement_timeout = 120 },")
        :format(pg.conninfo),
    })
    local d, text, log = start_daemon(cfg, tmp, "tstats.log")
    assert(stack.wait_until(function() return waiting_for_lock(pg) end, 30, 0.2),
      "the summary never reached its transaction:\n" .. text())
    -- a reload while the summary is suspended: the daemon goes on, the summary still waits
    d:kill("HUP")
    local reloaded = stack.wait_until(function() return text():find("configuration reloaded", 1, true) end, 15, 0.2)
    stack.sleep(1)
    local still = waiting_for_lock(pg) and true or false
    local t = stack.now()
    d:kill("TERM")
    local rc = d:wait(15)
    local exit_s = stack.now() - t
    local abandoned = text():match("[^\n]*the daily summary in progress[^\n]*") or ""
    local cancel_line = text():match("[^\n]*shutdown: the server has the cancel request[^\n]*") or "none"
    -- a backend waiting for a lock does not read from its client: without the cancel sent at
    -- shutdown it would learn of the closed connection only once it had the lock; cancelled, it
    -- ends (rolling its transaction back) while the lock is still held
    local function sessions()
      return tonumber((pg:psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tstats'"):match("%d+")))
    end
    local still_waiting = stack.wait_until(function() return sessions() == 0 end, 10, 0.2) and 0 or sessions()
    stack.pg_release_lock(pg, locker)
    local d2, text2 = start_daemon(cfg, tmp, "tstats2.log")
    assert(stack.wait_until(function() return text2():find("daily summary for " .. Ddate .. " done", 1, true) end, 40, 0.2),
      text2())
    stack.sleep(3)
    assert.are.equal(0, d2:stop(), "SIGTERM: exit 0")
    sim:stop()
    local total, day, dups = summary_rows(pg, Ddate)
    local done1 = select(2, text():gsub("daily summary for " .. Dpat .. " done", ""))
    local done2 = select(2, text2():gsub("daily summary for " .. Dpat .. " done", ""))
    print(("summary SIGTERM: a SIGHUP while it waited: reloaded %s, still waiting %s; exit %s %.1f s after SIGTERM (shutdown_timeout 5) with the summary waiting for the lock; "
      .. "log: %s; %s; tstats sessions left 10 s later with the lock still held: %s; the restart did the day %d time(s) (the first run %d); "
      .. "stats_summary %d rows (%d for the day), %d duplicated keys")
      :format(tostring(reloaded and true), tostring(still), tostring(rc), exit_s, abandoned:sub(1, 200), cancel_line:sub(1, 160), still_waiting, done2, done1, total,
        day, dups))
    assert.truthy(reloaded, "SIGHUP while the summary waits: reloaded\n" .. text())
    assert.is_true(still, "the summary still waits after the reload")
    assert.are.equal(0, rc)
    assert.truthy(exit_s < 5, "exit within shutdown_timeout: " .. exit_s)
    assert.truthy(abandoned ~= "", text())
    assert.truthy(cancel_line ~= "none", "the cancel at shutdown is logged:\n" .. text())
    assert.are.equal(0, still_waiting)
    assert.are.equal(0, done1)
    assert.are.equal(1, done2)
    assert.are.equal(4, day)
    assert.are.equal(4, total)
    assert.are.equal(0, dups)
  end)
end)
