-- Runtime spec: `tstats sync` between two real influxd instances: millions of
-- points copied exactly (ns times, integer fields, every tag) with peak RSS
-- printed and bounded by the chunk, "missing or lower" kept, resume after
-- kill -9 and SIGTERM from the last completed chunk, a rerun that writes
-- nothing, --dry-run, refusals, and failures counted with a non-zero exit.
local stack = require "spec.runtime.stack"
local q = stack.quote

local HOSTS, DAYS = 200, 7           -- 200 x 1440 x 7 = 2,016,000 points of bandwidth.1min

describe("tstats sync", function()
  local tstats = stack.bin("tstats")
  local A, B, tmp
  local T0   -- start of the data: DAYS days before the last whole hour - 1 h

  local function iq(h, text, db)
    local res, status, body = stack.influx_query(h.url, text, db or "cache_stats", { epoch = "ns" })
    assert(status == 200, body)
    assert(not res.results[1].error, text .. ": " .. tostring(res.results[1].error))
    return res.results[1].series or {}
  end
  local function scalar(h, text, db)
    local s = iq(h, text, db)[1]
    return s and s.values[1][2] or 0
  end

  local function post_lines(h, db, rp, lines)
    local st, body = stack.influx_write(h.url, db, table.concat(lines, "\n") .. "\n", "ns", rp)
    assert(st == 204, body)
  end

  local function sync(args, opts)
    opts = opts or {}
    return stack.run(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(opts.target or B.url)
      .. " --state-dir " .. q(opts.state or (tmp .. "/state")) .. " " .. args, { timeout = opts.timeout or 900, env = opts.env })
  end

  local function reset_target()
    iq(B, "DROP DATABASE cache_stats", "")
    local rc, _, err = stack.run(q(tstats) .. " setup-influx --replication 1", { env = { TSTATS_INFLUX_URL = B.url } })
    assert(rc == 0, err)
  end

  setup(function()
    A = stack.influxd_start_atc()
    B = stack.influxd_start_atc()
    tmp = stack.tmpdir()
    local hour = os.time() // 3600 * 3600
    T0 = hour - 3600 - DAYS * 86400
    -- bandwidth.1min: every tag of the CQ output (cachegroup and type, which ATC's sync dropped)
    local lines = {}
    for m = 0, DAYS * 1440 - 1 do
      local t = (T0 + m * 60) * 1000000000
      for hnum = 1, HOSTS do
        lines[#lines + 1] = ("bandwidth.1min,cachegroup=cg\\ %d.x,cdn=cdn%d,hostname=edge-%d,type=%s value=%d.%d %d")
          :format(hnum % 7, hnum % 3, hnum, hnum % 5 == 0 and "MID" or "EDGE", hnum * 1000 + m % 977, m % 10, t)
        if #lines == 50000 then post_lines(A, "cache_stats", "monthly", lines); lines = {} end
      end
    end
    if #lines > 0 then post_lines(A, "cache_stats", "monthly", lines) end
    -- raw data with integer fields, a string, a boolean and nanosecond times
    lines = {}
    for i = 0, 999 do
      lines[#lines + 1] = ("custom_int,hostname=edge-%d big=%di,small=%di,label=\"x,\\\"%d\",up=%s %d"):format(i % 4,
        9007199254740993 + i, i, i, i % 2 == 0 and "true" or "false", (T0 + i * 60) * 1000000000 + 123456789)
    end
    post_lines(A, "cache_stats", "monthly", lines)
  end)
  teardown(function() stack.cleanup_all() end)

  it("refuses syncing an instance onto itself, a missing URL and an unknown database", function()
    local rc, _, err = stack.run(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(A.url .. "/"))
    assert.are.equal(2, rc)
    assert.truthy(err:find("onto itself", 1, true), err)
    rc, _, err = stack.run(q(tstats) .. " sync --source " .. q(A.url:gsub("127%.0%.0%.1", "localhost")) .. " --target " .. q(A.url))
    assert.are.equal(2, rc)
    assert.truthy(err:find("onto itself", 1, true), err)
    rc, _, err = stack.run(q(tstats) .. " sync --source " .. q(A.url))
    assert.are.equal(2, rc)
    assert.truthy(err:find("--target URL are both required", 1, true), err)
    rc, _, err = sync("--database cache")
    assert.are.equal(2, rc)
    assert.truthy(err:find("--database must be", 1, true), err)
    rc, _, err = sync("--measurement nosuch.1min")
    assert.are.equal(2, rc)
    assert.truthy(err:find("matches none", 1, true), err)
  end)

  it("copies millions of points exactly, every tag kept, missing-or-lower, memory bounded by the chunk", function()
    -- the target already has some points: lower (overwritten), higher (kept), equal (skipped)
    local t1 = (T0 + 60) * 1000000000
    post_lines(B, "cache_stats", "monthly", {
      ("bandwidth.1min,cachegroup=cg\\ 1.x,cdn=cdn1,hostname=edge-1,type=EDGE value=1 %d"):format(t1),
      ("bandwidth.1min,cachegroup=cg\\ 2.x,cdn=cdn2,hostname=edge-2,type=EDGE value=999999 %d"):format(t1),
      ("bandwidth.1min,cachegroup=cg\\ 3.x,cdn=cdn0,hostname=edge-3,type=EDGE value=3001.1 %d"):format(t1),
    })
    -- dry run: counts only
    local rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --dry-run")
    assert.are.equal(0, rc, err)
    assert.truthy(out:find("(dry run): 2016000 points read, 2015998 would be written, 2 already in the target", 1, true), out)
    assert.are.equal(3, scalar(B, 'SELECT count(value) FROM "monthly"."bandwidth.1min"'))

    local function peak(o) return tonumber(o:match("peak RSS ([%d.]+) MiB")) end
    rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --chunk 6h")
    assert.are.equal(0, rc, err)
    assert.truthy(out:find(" 0 errors", 1, true), out)
    local week_rss = peak(out)
    print(("\n[sync] %d days, %d points, 6 h chunks: %s"):format(DAYS, HOSTS * 1440 * DAYS, out:gsub("\n$", "")))
    -- one day again (--restart: queried, compared, nothing written) with the same chunk and with a smaller one
    local day = os.date("!%Y-%m-%d", T0 + 86400)
    rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --restart --chunk 6h --from " .. day .. " --to " .. day)
    assert.are.equal(0, rc, err)
    assert.truthy(out:find(" 0 written,", 1, true), out)
    local day_rss = peak(out)
    rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --restart --chunk 1h --from " .. day .. " --to " .. day)
    assert.are.equal(0, rc, err)
    local small_rss = peak(out)
    print(("[sync] peak RSS: %d days in 6 h chunks %.1f MiB; 1 day in 6 h chunks %.1f MiB; 1 day in 1 h chunks %.1f MiB")
      :format(DAYS, week_rss, day_rss, small_rss))
    -- 2,016,000 points are ~200 MB of line protocol: the peak follows the chunk, not the data
    assert.truthy(week_rss < day_rss * 1.25 + 8, ("week %.1f vs day %.1f MiB"):format(week_rss, day_rss))
    assert.truthy(small_rss < day_rss, ("1 h chunks %.1f vs 6 h chunks %.1f MiB"):format(small_rss, day_rss))
    assert.truthy(week_rss < 160, week_rss)

    assert.are.equal(HOSTS * 1440 * DAYS, scalar(B, 'SELECT count(value) FROM "monthly"."bandwidth.1min"'))
    -- the same values, series by series, with all four tags
    local sa = iq(A, 'SELECT sum(value), count(value) FROM "monthly"."bandwidth.1min" GROUP BY *')
    local sb = iq(B, 'SELECT sum(value), count(value) FROM "monthly"."bandwidth.1min" GROUP BY *')
    assert.are.equal(HOSTS, #sb)
    local by = {}
    for _, s in ipairs(sa) do by[s.tags.hostname] = s end
    for _, s in ipairs(sb) do
      local src = by[s.tags.hostname]
      assert.truthy(s.tags.cachegroup:match("^cg %d%.x$") and s.tags.type ~= "" and s.tags.cdn ~= "", s.tags.hostname)
      for _, k in ipairs({ "cachegroup", "cdn", "type" }) do assert.are.equal(src.tags[k], s.tags[k]) end
      assert.are.equal(src.values[1][3], s.values[1][3])
      if s.tags.hostname ~= "edge-2" then
        assert.are.equal(src.values[1][2], s.values[1][2], s.tags.hostname)
      end
    end
    local h2 = iq(B, ("SELECT value FROM \"monthly\".\"bandwidth.1min\" WHERE hostname = 'edge-2' AND time = %d"):format(t1))
    assert.are.equal(999999, h2[1].values[1][2])   -- higher in the target: kept
    local h1 = iq(B, ("SELECT value FROM \"monthly\".\"bandwidth.1min\" WHERE hostname = 'edge-1' AND time = %d"):format(t1))
    assert.are.equal(1001.1, h1[1].values[1][2])   -- lower in the target: replaced

    -- a rerun of the finished sync writes nothing (and queries no recorded chunk)
    rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --chunk 6h")
    assert.are.equal(0, rc, err)
    assert.truthy(out:find(" 0 written,", 1, true), out)
    assert.truthy(out:find(" 0 chunks queried, %d+ resumed past"), out)
  end)

  it("keeps integer fields integers and nanosecond times exact (--rp for raw series)", function()
    local rc, out, err = sync("--database cache_stats --rp monthly --measurement custom_int")
    assert.are.equal(0, rc, err .. out)
    assert.truthy(out:find("1000 written", 1, true), out)
    local rows = iq(B, 'SELECT big, small, label, up FROM "monthly"."custom_int" WHERE hostname = \'edge-1\' LIMIT 2')[1].values
    local src = iq(A, 'SELECT big, small, label, up FROM "monthly"."custom_int" WHERE hostname = \'edge-1\' LIMIT 2')[1].values
    for i = 1, 2 do
      for c = 1, 5 do assert.are.equal(src[i][c], rows[i][c]) end
    end
    -- stack.influx_query decodes with cjson: check exactness on the raw text
    local _, _, body = stack.influx_query(B.url, 'SELECT big FROM "monthly"."custom_int" WHERE hostname = \'edge-1\' LIMIT 1',
      "cache_stats", { epoch = "ns" })
    assert.truthy(body:find(("[%d,9007199254740994]"):format((T0 + 60) * 1000000000 + 123456789), 1, true), body)
    local types = iq(B, 'SHOW FIELD KEYS FROM "monthly"."custom_int"')[1].values
    local t = {}
    for _, r in ipairs(types) do t[r[1]] = r[2] end
    assert.are.same({ big = "integer", small = "integer", label = "string", up = "boolean" }, t)
    assert.are.equal("x,\"1", rows[1][4])
  end)

  local function resumed_after(signal)
    reset_target()
    local state = tmp .. "/state-" .. signal
    local log = tmp .. "/sync-" .. signal .. ".log"
    local h = stack.spawn(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(B.url) .. " --state-dir "
      .. q(state) .. " --database cache_stats --measurement bandwidth.1min --chunk 2h", log)
    -- wait until a few chunks are recorded, then interrupt
    assert.truthy(stack.wait_until(function()
      local f = io.popen("cat " .. q(state) .. "/sync-*.state 2>/dev/null")
      local s = f:read("a")
      f:close()
      local _, _, a, b = s:find("\t(%d+)\t(%d+)\n")
      return a and (tonumber(b) - tonumber(a)) >= 6 * 3600 * 1000000000
    end, 300, 0.2), "no chunk recorded: " .. tostring(stack.read_file(log)))
    h:kill(signal)
    local code = h:wait(30)
    assert.truthy(code ~= 0, "interrupted")
    local partial = scalar(B, 'SELECT count(value) FROM "monthly"."bandwidth.1min"')
    assert.truthy(partial > 0 and partial < HOSTS * 1440 * DAYS, partial)
    local rc, out, err = stack.run(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(B.url) .. " --state-dir "
      .. q(state) .. " --database cache_stats --measurement bandwidth.1min --chunk 2h", { timeout = 900 })
    assert.are.equal(0, rc, err)
    local resumed = tonumber(out:match(" (%d+) resumed past"))
    assert.truthy(resumed and resumed >= 3, out)
    print(("\n[sync] after %s: %d points were in, %s"):format(signal, partial, out:gsub("\n$", "")))
    assert.are.equal(HOSTS * 1440 * DAYS, scalar(B, 'SELECT count(value) FROM "monthly"."bandwidth.1min"'))
    rc, out = stack.run(q(tstats) .. " sync --source " .. q(A.url) .. " --target " .. q(B.url) .. " --state-dir "
      .. q(state) .. " --database cache_stats --measurement bandwidth.1min --chunk 2h", { timeout = 900 })
    assert.are.equal(0, rc)
    assert.truthy(out:find(" 0 written,", 1, true), out)
  end

  it("resumes from the last completed chunk after kill -9", function() resumed_after("KILL") end)
  it("resumes from the last completed chunk after SIGTERM", function() resumed_after("TERM") end)

  it("counts failures and exits non-zero (missing database, field type conflict)", function()
    iq(B, "DROP DATABASE cache_stats", "")
    local rc, out, err = sync("--database cache_stats --measurement bandwidth.1min", { state = tmp .. "/state-missing" })
    assert.are.equal(1, rc)
    assert.truthy(err:find("database cache_stats does not exist on the target: run `tstats setup-influx`", 1, true), err)
    assert.truthy(out:find(" 1 errors", 1, true), out)
    reset_target()
    -- the target holds "value" as an integer: InfluxDB refuses the float points (400), each counted
    post_lines(B, "cache_stats", "monthly", { ("bandwidth.1min,hostname=x value=1i %d"):format((T0 + 60) * 1000000000) })
    rc, out, err = sync("--database cache_stats --measurement bandwidth.1min --from " .. os.date("!%Y-%m-%dT%H:00:00Z", T0)
      .. " --to " .. os.date("!%Y-%m-%dT%H:00:00Z", T0 + 3600), { state = tmp .. "/state-conflict" })
    assert.are.equal(1, rc, out)
    assert.truthy(err:find("field type conflict", 1, true), err)
    assert.truthy(err:find("is float on the source and integer on the target", 1, true), err)
    local n = tonumber(out:match(" (%d+) errors"))
    assert.are.equal(HOSTS * 60, n)
  end)
end)
