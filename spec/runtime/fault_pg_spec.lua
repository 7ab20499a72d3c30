-- fault_pg_spec.lua: fault 9 of the fault suite (test side). PostgreSQL 15 (scripts/lib/pg.sh)
-- stopped while the daemon's daily summary is inside its stats_summary transaction (held there
-- by an advisory lock another session owns), then started again on the same port and data: the
-- summary is retried at the next tick, counted and logged, and stats_summary and daily_stats
-- hold each row exactly once.
local stack = require "spec.runtime.stack"
local q = stack.quote

local DAY = 86400
local tstats_bin = stack.bin("tstats")
local pg_sh = stack.root() .. "/scripts/lib/pg.sh"

-- the daemon's config: 1 s polls, a summary to pg every `every` s, then extra
local function summary_config(tmp, to_url, influx, every, extra)
  return stack.write_config(tmp .. "/config.lua", {
    to_url = to_url, influx_url = influx.url, influx_extra = "timeout = 5", state_dir = tmp .. "/state",
    collect = "timeout = 0.5, connect_timeout = 0.5",
    summary = '{ sinks = { "pg" }, rollups = { "daily" }, grace = 600 }',
    extra = ("daily_summary_interval = %d, %s"):format(every, extra),
  })
end

describe("fault suite: PostgreSQL stopped during a daily summary", function()
  teardown(function() stack.cleanup_all() end)

  it("9. the summary is retried, nothing is duplicated in stats_summary or daily_stats", function()
    local influx = stack.influxd_start_atc()
    local pg = stack.pg_start()
    local tmp = stack.tmpdir()
    local D, Ddate, Dpat = stack.summary_day()
    local lines = {
      ("bandwidth.cdn.1min,cdn=cdn-a value=1000000 %d"):format(D),
      ("bandwidth.cdn.1min,cdn=cdn-a value=4000000 %d"):format(D + 12 * 3600),
      ("bandwidth.cdn.1min,cdn=cdn-a value=500000 %d"):format(D + DAY - 60),
      ("bandwidth.cdn.1min,cdn=cdn-b value=7777777 %d"):format(D),
    }
    local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    assert.are.equal(204, st, body)
    -- (1e6 + 4e6 + 5e5) * 60 / 8 kB = 41,250,000 kB = 0.04125 TB; cdn-b 7777777 * 60 / 8 kB
    local want = {
      "cdn-a|all|daily_bytesserved|0.04125", "cdn-a|all|daily_maxgbps|4",
      "cdn-b|all|daily_bytesserved|0.05833332750", "cdn-b|all|daily_maxgbps|7.777777",
    }

    -- another session holds the lock the summary's transaction takes first
    local locker = stack.pg_hold_lock(pg, tmp)

    local sim = stack.sim_start("--cdns 1 --caches 2 --ds 1", { dir = tmp })
    local to_url = sim.to_url
    local port = stack.free_port()
    local cfg = summary_config(tmp, to_url, influx, 1,
      ("postgres = { conninfo = %q }, http = { listen = \"127.0.0.1:%d\" },"):format(pg.conninfo, port))
    local log = tmp .. "/tstats.log"
    local function text() return stack.read_file(log) or "" end
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)

    -- the summary waits inside its transaction (InfluxDB already written, PostgreSQL not yet)
    assert(stack.wait_until(function() return #stack.pg_lock_waiters(pg) == 1 end, 30, 0.2),
      "the summary never reached its transaction:\n" .. text())
    -- the summary's libpq calls block the daemon's loop: polls made while it waits (said, not asserted)
    local function collected() return select(2, text():gsub("Collected %d+ cache stats values", "")) end
    local c_wait0 = collected()
    stack.sleep(3)
    local polls_while_waiting = collected() - c_wait0
    local influx_mid = stack.influx_rows(stack.influx_query(influx.url,
      'SELECT count(value) FROM "indefinite"."daily_maxgbps"', "daily_stats"))
    os.execute(q(pg_sh) .. " stop " .. q(pg.dir))
    local t_stop = stack.now()
    assert(stack.wait_until(function() return text():find("daily summary for " .. Ddate .. " failed, will retry", 1, true) end,
      20, 0.2), text())
    stack.sleep(3)     -- ticks that find PostgreSQL down
    -- the tick in the transaction says the day failed; the next ones fail earlier (last recorded day)
    local failed_ticks = select(2, text():gsub("ERROR daily summary", ""))
    local first_fail = text():match("[^\n]*daily summary for " .. Dpat .. " failed, will retry[^\n]*")
    -- start the same cluster again on the same port (pg.sh start would make a new one)
    local cmd = ("cd / && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D %s -l %s -w -t 60 "
      .. "-o %s start >/dev/null"):format(q(pg.dir .. "/data"), q(pg.dir .. "/postgres.log"),
      q(("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off"):format(pg.port, pg.dir .. "/sock")))
    if os.execute("id -u | grep -qx 0") ~= true then cmd = cmd:gsub("runuser %-u postgres %-%- ", "") end
    assert.is_true(os.execute(cmd) == true, "pg_ctl start failed")
    local t_up = stack.now()
    assert(stack.wait_until(function() return text():find("daily summary for " .. Ddate .. " done", 1, true) end, 30, 0.2),
      text())
    local retry_s = stack.now() - t_up
    stack.sleep(3)     -- later ticks must not write the day again
    local _, metrics = stack.run("curl -sS -m 5 " .. q("http://127.0.0.1:" .. port .. "/metrics"))
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    locker:stop()

    local rows = pg:psql(("SELECT cdn_name || '|' || deliveryservice_name || '|' || stat_name || '|' || stat_value "
      .. "FROM stats_summary WHERE stat_date = '%s' ORDER BY 1"):format(Ddate))
    local got = {}
    for l in rows:gmatch("[^\n]+") do got[#got + 1] = l end
    local total, _, dups = stack.summary_rows(pg, Ddate)
    local points = 0
    for _, m in ipairs({ "daily_maxgbps", "daily_bytesserved" }) do
      for _, r in ipairs(stack.influx_rows(stack.influx_query(influx.url,
        ('SELECT count(value) FROM "indefinite"."%s"'):format(m), "daily_stats"))) do points = points + r.count end
    end
    local err_metric = metrics:match('event="summary_errors"} (%d+)')
    local reconnect_metric = metrics:match('event="pg_reconnects"} (%d+)')
    local done = select(2, text():gsub("daily summary for " .. Dpat .. " done", ""))
    print(("fault 9: PostgreSQL stopped while the summary of %s waited in its transaction (daily_stats already had "
      .. "%s points of daily_maxgbps); %d failed ticks logged (first: %s); restarted %.1f s after the stop, the day "
      .. "was done %.1f s later (%d 'done' lines); stats_summary %d rows (%d for the day), %d duplicated keys; "
      .. "daily_stats %d points; metrics summary_errors=%s pg_reconnects=%s; cache polls in the 3 s the summary waited "
      .. "for the lock: %d")
      :format(Ddate, tostring(influx_mid[1] and influx_mid[1].count), failed_ticks, tostring(first_fail),
        t_up - t_stop, retry_s, done, total, #got, dups, points, tostring(err_metric), tostring(reconnect_metric), polls_while_waiting))
    for i, w in ipairs(want) do
      local c, ds, s, v = w:match("^(.-)|(.-)|(.-)|(.-)$")
      local gc, gds, gs, gv = (got[i] or ""):match("^(.-)|(.-)|(.-)|(.-)$")
      assert.are.same({ c, ds, s }, { gc, gds, gs })
      assert.truthy(math.abs(tonumber(gv) - tonumber(v)) < 1e-9 * tonumber(v), got[i] .. " vs " .. w)
    end
    assert.are.equal(4, #got)
    assert.are.equal(4, total)
    assert.are.equal(0, dups)
    assert.are.equal(4, points)
    assert.are.equal(1, done)
    assert.truthy(failed_ticks >= 1)
    assert.truthy(tonumber(err_metric or "0") >= 1, "summary_errors counted: " .. metrics)
    sim:stop()
  end)

  it("9b. a lock held for good costs each tick postgres.statement_timeout, not the daemon; the day is done once it goes", function()
    local influx = stack.influxd_start_atc()
    local pg = stack.pg_start()
    local tmp = stack.tmpdir()
    local D, Ddate, Dpat = stack.summary_day()
    local st, body = stack.influx_write(influx.url, "cache_stats",
      ("bandwidth.cdn.1min,cdn=cdn-a value=4000000 %d\n"):format(D + 3600), "s", "monthly")
    assert.are.equal(204, st, body)
    local locker = stack.pg_hold_lock(pg, tmp)
    local sim = stack.sim_start("--cdns 1 --caches 2 --ds 1", { dir = tmp })
    local cfg = summary_config(tmp, sim.to_url, influx, 3,
      ("postgres = { conninfo = %q, statement_timeout = 1 },"):format(pg.conninfo))
    local log = tmp .. "/tstats.log"
    local function text() return stack.read_file(log) or "" end
    local d = stack.spawn(tstats_bin .. " --config " .. q(cfg) .. " run", log)
    finally(function() if d:alive() then d:kill("KILL"); d:wait(10) end end)
    assert(stack.wait_until(function() return text():find("canceling statement due to", 1, true) end, 30, 0.2), text())
    local function collected() return select(2, text():gsub("Collected %d+ cache stats values", "")) end
    local c0, t0 = collected(), stack.now()
    stack.sleep(6)
    local polls, secs = collected() - c0, stack.now() - t0
    local timeouts = select(2, text():gsub("canceling statement due to [%a ]-timeout", ""))
    stack.pg_release_lock(pg, locker)
    assert(stack.wait_until(function() return text():find("daily summary for " .. Ddate .. " done", 1, true) end, 30, 0.2),
      text())
    stack.sleep(4)
    assert.are.equal(0, d:stop(), "SIGTERM: exit 0")
    local total = tonumber((pg:psql("SELECT count(*) FROM stats_summary"):match("%d+")))
    local done = select(2, text():gsub("daily summary for " .. Dpat .. " done", ""))
    local first = text():match("[^\n]*canceling statement due to[^\n]*") or ""
    print(("fault 9b: advisory lock held by another session, postgres.statement_timeout 1 s, ticks every 3 s: %d "
      .. "cancelled waits logged (%s); %d cache polls in %.1f s while the lock stayed; after it went the day was done "
      .. "%d time(s), stats_summary %d rows"):format(timeouts, first:sub(1, 260), polls, secs, done, total))
    assert.truthy(timeouts >= 1)
    assert.truthy(polls >= 3, "polls went on between the bounded waits: " .. polls)
    assert.are.equal(1, done)
    assert.are.equal(2, total)
    sim:stop()
  end)
end)
