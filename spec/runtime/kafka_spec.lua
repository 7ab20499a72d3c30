-- Runtime spec (issue "Kafka export"): the real tstats daemon against the simulator, a real
-- influxd and librdkafka's mock cluster (hosted by the test helper tstats-kafka-mock). Kafka is
-- read back from the beginning of every partition and compared point by point with InfluxDB:
-- every point exactly once per target, with Traffic Stats' JSON plus db and rp; brokers down for
-- several polls; InfluxDB down the whole time.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats_bin = stack.bin("tstats")
local mock_bin = stack.bin("tstats-kafka-mock")
local sq = stack.quote

local influx, tmp

local function start_sim(args) return stack.sim_start(args) end

-- The mock cluster: 3 brokers, topic "tstats" with 4 partitions.
local function start_kafka()
  local dir = stack.tmpdir()
  local fifo = dir .. "/control"
  assert(os.execute("mkfifo " .. sq(fifo)))
  local h = stack.spawn(mock_bin .. " --control " .. sq(fifo) .. " --topic tstats --partitions 4", dir .. "/mock.log")
  local boot = stack.wait_until(function()
    return (stack.read_file(dir .. "/mock.log") or ""):match("bootstrap.servers=(%S+)")
  end, 15, 0.05)
  assert(boot, "mock cluster did not start: " .. tostring(stack.read_file(dir .. "/mock.log")))
  h.brokers = boot
  function h.cmd(_, line)
    assert(os.execute("printf '%s\\n' " .. sq(line) .. " > " .. sq(fifo)))
  end
  local n = 0
  -- Every message of the topic: { {partition=, key=, value=, doc=} ... }
  function h.dump(self)
    n = n + 1
    local out = dir .. "/dump" .. n
    self:cmd("dump tstats " .. out)
    assert(stack.wait_until(function() return stack.read_file(out) end, 60, 0.1), "dump did not finish")
    local msgs = {}
    for line in stack.read_file(out):gmatch("[^\n]+") do
      local p, key, value = line:match("^(%d+)\t([^\t]*)\t(.*)$")
      if p then
        msgs[#msgs + 1] = { partition = tonumber(p), key = key, value = value, doc = cjson.decode(value) }
      else
        -- the next point of a grouped message (one per line): its partition, no key of its own
        local last = assert(msgs[#msgs], "a dump starting with a continuation line")
        msgs[#msgs + 1] = { partition = last.partition, value = line, doc = cjson.decode(line) }
      end
    end
    return msgs
  end
  return h
end

local function write_config(name, brokers, extra)
  extra = extra or ""
  -- a test that sets summary itself gets no default one
  local summary = nil
  if extra:find("summary =", 1, true) then summary = false end
  return stack.write_config(tmp.dir .. "/config-" .. name .. ".lua", { to_url = tmp.to_url,
    influx_url = tmp.influx_url or influx.url, config_interval = 300, state_dir = tmp.dir .. "/state-" .. name,
    summary = summary,
    -- an extra line with its own kafka table (BROKERS in it) takes the place of the default one
    extra = extra:find("kafka = {", 1, true) and extra:gsub("BROKERS", ("%q"):format(brokers))
      or ("kafka = { enabled = true, brokers = %q, topic = \"tstats\" },\n  "):format(brokers) .. extra })
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian).
local function days(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function rfc3339_ms(s)
  local y, mo, d, h, mi, se, frac = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$")
  assert(y, "not RFC 3339 UTC: " .. s)
  local ms = ((days(tonumber(y), tonumber(mo), tonumber(d)) * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60 + tonumber(se)
  ms = ms * 1000
  if frac ~= "" then ms = ms + tonumber((frac .. "000"):sub(1, 3)) end
  assert(#frac <= 3, "a TM time stamp is in ms: " .. s)
  return ms
end

local function point_key(db, name, tags, time_ms, value)
  local t = {}
  for k, v in pairs(tags) do
    if v ~= cjson.null and v ~= "" then t[#t + 1] = k .. "=" .. v end
  end
  table.sort(t)
  return table.concat({ db, name, table.concat(t, ","), string.format("%d", time_ms), string.format("%.17g", value) }, "|")
end

-- Every point of the stats databases' "daily" RP, as keys (a multiset).
local function influx_points()
  local keys, n = {}, 0
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(influx.url, 'SELECT * FROM "daily"./.*/', db, { epoch = "ms" })
    assert(d and d.results, "query failed")
    for _, s in ipairs(d.results[1].series or {}) do
      for _, v in ipairs(s.values) do
        local tags, time, value = {}, nil, nil
        for i, col in ipairs(s.columns) do
          if col == "time" then time = v[i] elseif col == "value" then value = v[i] else tags[col] = v[i] end
        end
        local k = point_key(db, s.name, tags, math.tointeger(time), value)
        keys[k] = (keys[k] or 0) + 1
        n = n + 1
      end
    end
  end
  return keys, n
end

local function kafka_points(msgs)
  local keys, n, dups = {}, 0, 0
  for _, m in ipairs(msgs) do
    local d = m.doc
    local k = point_key(d.db, d.name, d.tags, rfc3339_ms(d.time), d.fields.value)
    if keys[k] then dups = dups + 1 end
    keys[k] = (keys[k] or 0) + 1
    n = n + 1
  end
  return keys, n, dups
end

-- Kafka holds exactly InfluxDB's points: same multiset, no duplicates.
local function assert_same(ik, kk)
  local missing, extra = 0, 0
  local example
  for k, c in pairs(ik) do
    if (kk[k] or 0) < c then missing = missing + 1; example = example or ("missing in Kafka: " .. k) end
  end
  for k, c in pairs(kk) do
    if (ik[k] or 0) < c then extra = extra + 1; example = example or ("not in InfluxDB: " .. k) end
  end
  assert.are.equal(0, missing, example)
  assert.are.equal(0, extra, example)
end

local function stat(log, key)
  local v
  for x in log:gmatch(key .. "=(%d+)") do v = tonumber(x) end
  return v
end

local function count(db)
  local d = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"./.*/', db)
  local n = 0
  for _, s in ipairs(d.results[1].series or {}) do n = n + s.values[1][2] end
  return n
end

describe("kafka export #asan", function()
  local sim
  setup(function()
    influx = stack.influxd_start_atc()
    tmp = { dir = stack.tmpdir() }
    -- fresh time stamps at every poll (TM's own poll every 250 ms), so that every point the
    -- daemon collects is a distinct point in InfluxDB too
    sim = start_sim("--cdns 1 --caches 4 --stats 40 --ds 2 --cachegroups 2 --payload-cache-ms 0 --poll-ms 250")
    tmp.to_url = sim.to_url
  end)
  teardown(function() stack.cleanup_all() end)
  before_each(function() stack.influx_drop_series(influx.url) end)

  local function once(name, extra)
    local kafka = start_kafka()
    local cfg = write_config(name, kafka.brokers, extra)
    local log = tmp.dir .. "/" .. name .. ".log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    assert(stack.wait_until(function() return count("cache_stats") > 0 end, 30, 0.2), "points in InfluxDB")
    stack.sleep(4)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local text = stack.read_file(log)
    local msgs = kafka:dump()
    local ik, in_ = influx_points()
    local kk, kn, dups = kafka_points(msgs)
    print(("\n  " .. name .. ": %d points in InfluxDB, %d messages in Kafka, %d duplicates"):format(in_, kn, dups))
    assert.truthy(in_ > 500, "several polls stored")
    assert.are.equal(0, dups)
    assert.are.equal(in_, kn)
    assert.are.equal(stat(text, "points"), kn)
    assert.are.equal(stat(text, "written"), kn)
    assert.are.equal(stat(text, "delivered"), kn)
    assert_same(ik, kk)
    -- the message shape, the key, stable partitioning per series
    local part_of = {}
    local seen_ds = false
    for _, m in ipairs(msgs) do
      local d = m.doc
      assert.truthy(m.value:match('^{"name":"[^"]+","tags":{.*},"fields":{"value":[^}]+},"time":"[^"]+","db":"[^"]+","rp":"daily"}$'),
        m.value)
      local tags = {}
      for k, v in pairs(d.tags) do tags[#tags + 1] = k .. "=" .. v end
      table.sort(tags)
      local key = d.name .. "," .. table.concat(tags, ",")
      if m.key then assert.are.equal(key, m.key) end   -- a grouped message is keyed by its first point
      if part_of[key] then assert.are.equal(part_of[key], m.partition) end
      part_of[key] = m.partition
      if d.db == "deliveryservice_stats" then seen_ds = true end
    end
    assert.truthy(seen_ds, "delivery service stats exported too")
    kafka:stop()
  end

  it("sends every point once to Kafka and once to InfluxDB, with Traffic Stats' JSON plus db and rp (Kafka's spool position)", function()
    once("once")
    -- records go from memory as they are appended (claimed) or are read back: both through the consumer
    local log = stack.read_file(tmp.dir .. "/once.log")
    local read, claimed = log:match("kafka: messages=%d+ .* spool_records_read=(%d+) spool_records_claimed=(%d+)")
    assert.truthy(read, "fed through its spool consumer\n" .. log)
    assert.is_true(tonumber(read) + tonumber(claimed) > 0, "fed through its spool consumer")
  end)

  it("the same grouped (points_per_message = 50: messages made from the compact points, their buffers reused)", function()
    once("grouped", "kafka = { enabled = true, brokers = BROKERS, topic = \"tstats\", points_per_message = 50 },")
  end)

  it("the same without the spool (Kafka fed from memory)", function()
    once("nospool", "spool = { enabled = false },")
    assert.falsy(stack.read_file(tmp.dir .. "/nospool.log"):find("spool_records_read=", 1, true))
  end)

  it("brokers down for several polls, then back: nothing lost or duplicated in Kafka, InfluxDB writes went on", function()
    local kafka = start_kafka()
    local cfg = write_config("down", kafka.brokers)
    local log = tmp.dir .. "/down.log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    assert(stack.wait_until(function() return count("cache_stats") > 0 end, 30, 0.2), "points in InfluxDB")
    stack.sleep(1.5)
    kafka:cmd("down")
    stack.sleep(0.5)
    local before = count("cache_stats")
    stack.sleep(5)
    local during = count("cache_stats")
    kafka:cmd("up")
    stack.sleep(4)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local text = stack.read_file(log)
    print(("\n  down: cache_stats points in InfluxDB %d at broker-down, %d 5 s later"):format(before, during))
    assert.truthy(during > before, "InfluxDB writes went on while Kafka was down")
    local ik, in_ = influx_points()
    local kk, kn, dups = kafka_points(kafka:dump())
    print(("  down: %d points in InfluxDB, %d messages in Kafka, %d duplicates"):format(in_, kn, dups))
    assert.are.equal(0, dups)
    assert.are.equal(in_, kn)
    assert.are.equal(stat(text, "points"), kn)
    assert_same(ik, kk)
    -- librdkafka's error events reached the log (rate-limited), e.g. "kafka: _TRANSPORT: ..."
    assert.truthy(text:find("WARN kafka: _[%u_]+: "), "broker errors logged")
    kafka:stop()
  end)

  it("kafka.* on SIGHUP: a change gets a new producer at the same spool position (every point once); changes it cannot apply are refused by name, the running producer kept", function()
    local kafka = start_kafka()
    local cfg = write_config("hup", kafka.brokers)
    local log = tmp.dir .. "/hup.log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    assert(stack.wait_until(function() return count("cache_stats") > 0 end, 30, 0.2), "points in InfluxDB")
    stack.sleep(1.5)
    local function hup(extra, expect)
      write_config("hup", kafka.brokers, extra)
      local before = #(stack.read_file(log) or "")
      ts:kill("HUP")
      assert(stack.wait_until(function() return (stack.read_file(log) or ""):find(expect, before + 1, true) end, 15, 0.1),
        "after SIGHUP: " .. expect)
      stack.sleep(2)   -- polls go on under what SIGHUP left running
    end
    -- applied: librdkafka settings change, the producer is rebuilt while the brokers are down, so
    -- that the replaced one still holds points (delivered by it once they are back, not re-read)
    kafka:cmd("down")
    stack.sleep(1.5)
    hup([[kafka = { enabled = true, brokers = "]] .. kafka.brokers .. [[", topic = "tstats", compression = "lz4",
      properties = { ["linger.ms"] = 20 } },]], "kafka: kafka.compression, kafka.properties changed: a new producer")
    kafka:cmd("up")
    -- refused: kafka.enabled cannot change live; the producer keeps running
    hup([[kafka = { enabled = false, brokers = "]] .. kafka.brokers .. [[", topic = "tstats" },]],
      "kafka: kafka.enabled cannot change on SIGHUP")
    -- refused: librdkafka does not know the property; the producer keeps running
    hup([[kafka = { enabled = true, brokers = "]] .. kafka.brokers .. [[", topic = "tstats", compression = "lz4",
      properties = { ["linger.ms"] = 20, ["no.such.property"] = "1" } },]], "but the new producer is refused")
    local after_refusals = count("cache_stats")
    stack.sleep(2)
    -- the replaced producer gets its points through once librdkafka reconnects (its backoff)
    assert.truthy(stack.wait_until(function()
      return (stack.read_file(log) or ""):find("kafka: the replaced producer delivered what it held and is closed", 1, true)
    end, 40, 0.2), "the replaced producer delivered and closed")
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local text = stack.read_file(log)
    for l in text:gmatch("[^\n]+") do
      if l:find("kafka: kafka%.") or l:find("replaced producer") or l:find("now exporting") then print("\n  hup log: " .. l:sub(1, 300)) end
    end
    assert.truthy(count("cache_stats") > after_refusals, "polls went on after the refused changes")
    local held = tonumber(text:match("the replaced one delivers the (%d+) points it holds"))
    assert.truthy(held and held > 0, "the replaced producer held points at the change")
    assert.truthy(text:find("kafka: the replaced producer delivered what it held and is closed", 1, true))
    assert.truthy(text:find("no.such.property", 1, true), "librdkafka's refusal names the property")
    -- one line per refusal, nothing else changed meanwhile
    local _, nref = text:gsub("kafka: kafka.enabled cannot change on SIGHUP", "")
    assert.are.equal(1, nref)
    local ik, in_ = influx_points()
    local kk, kn, dups = kafka_points(kafka:dump())
    print(("\n  hup: %d points in InfluxDB, %d messages in Kafka, %d duplicates"):format(in_, kn, dups))
    assert.truthy(in_ > 500, "several polls stored")
    assert.are.equal(0, dups)
    assert.are.equal(in_, kn)
    assert.are.equal(stat(text, "delivered"), kn)
    assert_same(ik, kk)
    kafka:stop()
  end)

  it("InfluxDB down the whole time: Kafka gets every collected point exactly once (no resend per InfluxDB retry)", function()
    local kafka = start_kafka()
    tmp.influx_url = "http://127.0.0.1:" .. stack.free_port()
    local cfg = write_config("nodb", kafka.brokers, "shutdown_timeout = 2,")
    tmp.influx_url = nil
    local log = tmp.dir .. "/nodb.log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    stack.sleep(6)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local text = stack.read_file(log)
    local _, kn, dups = kafka_points(kafka:dump())
    local collected = stat(text, "points")
    print(("\n  InfluxDB down: %d points collected, %d written to InfluxDB, %d messages in Kafka, %d duplicates"):format(
      collected, stat(text, "written"), kn, dups))
    assert.truthy(collected > 500)
    assert.are.equal(0, stat(text, "written"))
    assert.are.equal(0, dups)
    assert.are.equal(collected, kn)
    kafka:stop()
  end)

  it("exports the daily summaries once, with db daily_stats and rp indefinite, as InfluxDB has them", function()
    local DAY = 86400
    local D = (os.time() - 600) // DAY * DAY - DAY   -- the last day past summary.grace: the one computed
    local lines = {
      ("bandwidth.cdn.1min,cdn=cdn-a value=1000000 %d"):format(D),
      ("bandwidth.cdn.1min,cdn=cdn-a value=3000000 %d"):format(D + 3600),   -- the day's max: 3 Gbps
    }
    local st, body = stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    assert.are.equal(204, st, body)
    local kafka = start_kafka()
    local cfg = write_config("daily", kafka.brokers, [[summary = { enabled = true, sinks = { "api" }, rollups = { "daily" } },]])
    local log = tmp.dir .. "/daily.log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
    local function daily_rows()
      local d = stack.influx_query(influx.url, 'SELECT count(value) FROM "indefinite"./.*/', "daily_stats")
      local n = 0
      for _, sr in ipairs(d.results[1].series or {}) do n = n + sr.values[1][2] end
      return n
    end
    assert(stack.wait_until(function() return daily_rows() >= 2 end, 60, 0.5),
      "daily summary written to InfluxDB: " .. (stack.read_file(log) or ""):gsub("[^\n]*Collected[^\n]*\n", ""):gsub("[^\n]*Sent [^\n]*\n", ""):sub(1, 3000))
    stack.sleep(2)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local n_influx = daily_rows()
    local daily, max = 0, nil
    for _, m in ipairs(kafka:dump()) do
      if m.doc.db == "daily_stats" then
        daily = daily + 1
        assert.are.equal("indefinite", m.doc.rp)
        if m.doc.name == "daily_maxgbps" and m.doc.tags.cdn == "cdn-a" then
          assert.is_nil(max, "one daily_maxgbps message for cdn-a")
          max = m.doc
        end
      end
    end
    print(("\n  daily: %d daily_stats points in InfluxDB, %d in Kafka"):format(n_influx, daily))
    assert.are.equal(n_influx, daily)
    assert.truthy(max, "daily_maxgbps of cdn-a in Kafka")
    assert.are.equal(3, max.fields.value)
    -- the same time as in InfluxDB, to the second
    local r = stack.influx_query(influx.url, [[SELECT value FROM "indefinite"."daily_maxgbps" WHERE cdn = 'cdn-a']],
      "daily_stats", { epoch = "s" })
    local t = math.tointeger(r.results[1].series[1].values[1][1])
    assert.truthy(t >= D and t < D + DAY, "a time of the summarized day")
    assert.are.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", t), max.time)
    kafka:stop()
  end)

  -- Kafka's position in the spool: kill -9 with messages outstanding (brokers down, so the
  -- records read for Kafka are unacknowledged), then once more right after a poll with the
  -- brokers up; every point InfluxDB stored is in Kafka at least once, duplicates counted.
  it("kill -9 with Kafka messages outstanding, then a restart: every point in Kafka at least once, duplicates counted", function()
    local kafka = start_kafka()
    local cfg = write_config("kill", kafka.brokers)
    local log1, log2, log3 = tmp.dir .. "/kill1.log", tmp.dir .. "/kill2.log", tmp.dir .. "/kill3.log"
    local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log1)
    assert(stack.wait_until(function() return count("cache_stats") > 0 end, 30, 0.2), "points in InfluxDB")
    stack.sleep(1.5)
    kafka:cmd("down")
    stack.sleep(3.5)                          -- three polls for Kafka to hold
    ts:kill("KILL")
    ts:wait(10)
    kafka:cmd("up")
    ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log2)
    assert(stack.wait_until(function()
      return (stack.read_file(log2) or ""):find("not yet acknowledged by Kafka", 1, true)
    end, 30, 0.1), "the restart found Kafka's backlog in the spool: " .. tostring(stack.read_file(log2)))
    stack.sleep(3.2)
    ts:kill("KILL")                           -- brokers up: some acknowledgements not yet saved
    ts:wait(10)
    ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log3)
    stack.sleep(4)
    ts:kill("TERM")
    assert.are.equal(0, ts:wait(30))
    local ik, in_ = influx_points()
    local kk, kn, dups = kafka_points(kafka:dump())
    local missing, example = 0, nil
    for k in pairs(ik) do
      if not kk[k] then missing = missing + 1; example = example or k end
    end
    local extra = 0
    for k in pairs(kk) do if not ik[k] then extra = extra + 1 end end
    print(("\n  kill -9: %d points in InfluxDB, %d messages in Kafka, %d missing, %d duplicates, %d not in InfluxDB"):format(
      in_, kn, missing, dups, extra))
    assert.truthy(in_ > 1000, "several polls stored")
    assert.are.equal(0, missing, example)
    assert.are.equal(0, extra)
    assert.are.equal(kn - dups, in_)
    kafka:stop()
  end)

  -- The spool on a full filesystem (an 8 KiB tmpfs, two pages: the position files take pages of
  -- their own, and the compact records of this workload, ~3 KB a second, fill what is left within
  -- about two seconds; with 16 KiB the open segment filled only as the test ended, and one run in
  -- two saw no refusal at all): what the spool refuses every target (the InfluxDB writer and Kafka alike) gets from
  -- memory, since the one append is the target list's, made before any target took the batch.
  -- Nothing is missing or doubled, and nothing is counted as missed.
  it("spool on a full disk: Kafka fed from memory what the spool refused, nothing missed", function()
    local _, uid = stack.run("id -u")
    assert(uid:match("^0"), "this test mounts a tmpfs and must run as root (CI does)")
    local mnt = tmp.dir .. "/full"
    os.execute("mkdir -p " .. sq(mnt))
    assert.are.equal(0, (stack.run("mount -t tmpfs -o size=8k tmpfs " .. sq(mnt))), "mount -t tmpfs failed")
    local ok, err = pcall(function()
      local kafka = start_kafka()
      local cfg = write_config("full", kafka.brokers, "spool = { dir = " .. ("%q"):format(mnt .. "/spool") .. " },")
      local log = tmp.dir .. "/full.log"
      local ts = stack.spawn(tstats_bin .. " --config " .. sq(cfg) .. " run", log)
      assert(stack.wait_until(function() return count("cache_stats") > 0 end, 30, 0.2), "points in InfluxDB")
      stack.sleep(4)
      ts:kill("TERM")
      assert.are.equal(0, ts:wait(30))
      local text = stack.read_file(log)
      local missed = stat(text, "missed") or 0   -- kafka_points_missed, in the final kafka: line
      local ik, in_ = influx_points()
      local _, kn, dups = kafka_points(kafka:dump())
      local collected = stat(text, "points")
      print(("\n  disk full: %d points collected, %d in InfluxDB, %d messages in Kafka, %d counted as missed, %d duplicates"):format(
        collected, in_, kn, missed, dups))
      assert.truthy(text:find("points stay in memory"), "the spool said it refused appends: " .. text:sub(1, 2000))
      assert.are.equal(0, missed, "no point missed Kafka")
      assert.are.equal(0, dups)
      assert.are.equal(collected, in_)
      assert.are.equal(collected, kn)
      kafka:stop()
    end)
    os.execute("umount " .. sq(mnt) .. " 2>/dev/null")
    assert(ok, err)
  end)

  it("refuses a Kafka configuration it cannot honour at start, naming the key (exit 2)", function()
    local function refused(kafka, want)
      local path = tmp.dir .. "/bad.lua"
      stack.write_file(path, ([[
return {
  traffic_ops = { url = %q }, influxdb = { urls = { %q } }, state_dir = %q,
  summary = { enabled = false },
  kafka = %s,
}
]]):format(tmp.to_url, influx.url, tmp.dir .. "/state-bad", kafka))
      local rc, _, err = stack.run(tstats_bin .. " --config " .. sq(path) .. " run", { timeout = 30 })
      assert.are.equal(2, rc, err)
      assert.truthy(err:find(want, 1, true), err)
    end
    refused('{ enabled = true, topic = "t" }', "kafka.enabled = true needs kafka.brokers")
    refused('{ enabled = true, brokers = "127.0.0.1:9" }', "needs kafka.topic")
    refused('{ enabled = true, brokers = "127.0.0.1:9", topic = "t", acks = "1" }',
      'kafka.idempotence needs kafka.acks = "all" (it is "1")')
    refused('{ enabled = true, brokers = "127.0.0.1:9", topic = "t", properties = { ["no.such.thing"] = "1" } }',
      "no.such.thing")
    refused('{ enabled = true, brokers = "127.0.0.1:9", topic = "t", properties = { acks = "1" } }',
      "set kafka.acks instead")
  end)
end)
