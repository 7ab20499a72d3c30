-- stack.lua: test-side helpers for runtime busted specs (Lua 5.4, run from the repo root).
-- Pure test harness, outside the tstats binary: starts real influxd / PostgreSQL through
-- scripts/lib/*.sh, talks to them with the curl CLI, runs and spawns built binaries.
-- Everything started here is stopped by stack.cleanup_all(), at Lua state close, and by a
-- watchdog shell if the Lua process itself is killed (e.g. by `timeout`).
local cjson = require("cjson")

local stack = {}

-- Things to undo, newest last: {kind=, ...}. Cleanup walks it backwards.
local started = {}
local tmpdirs = {}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
stack.quote = q

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
stack.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end
stack.write_file = write_file

local function trim(s)
  local t = (s or ""):gsub("^%s+", ""):gsub("%s+$", "")
  return t
end

-- Runs a shell command, returns its trimmed stdout and exit status (number).
local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  if how == "signal" then code = 128 + code end
  return trim(out), (ok and 0 or code or 1)
end

local root_cache
function stack.root()
  if root_cache then return root_cache end
  -- This file is <root>/spec/runtime/stack.lua.
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/runtime/[^/]*$")
  if not dir or dir == "" or dir == "." then
    dir = "."
  end
  local abs = sh("cd " .. q(dir) .. " && pwd -P")
  root_cache = abs ~= "" and abs or dir
  return root_cache
end

function stack.build_dir()
  return os.getenv("TS_BUILD_DIR") or "build"
end

function stack.bin(name)
  local b = stack.build_dir()
  if b:sub(1, 1) ~= "/" then b = stack.root() .. "/" .. b end
  return b .. "/" .. name
end

-- The pid of this Lua process: the popen shell's parent.
local lua_pid
local function my_pid()
  if not lua_pid then lua_pid = sh("echo $PPID") end
  return lua_pid
end

-- A detached shell that runs `stop_cmd` once this Lua process is gone. Covers
-- SIGKILL/SIGTERM of busted, where no Lua finalizer runs.
local function watchdog(stop_cmd, dir)
  local script = "while kill -0 " .. my_pid() .. " 2>/dev/null; do sleep 1; done; " .. stop_cmd
  if dir then script = script .. "; rm -rf " .. q(dir) end
  local pid = sh("setsid sh -c " .. q(script) .. " </dev/null >/dev/null 2>&1 & echo $!")
  return tonumber(pid)
end

function stack.tmpdir()
  local base = os.getenv("TMPDIR") or "/tmp"
  local d = sh("mktemp -d " .. q(base .. "/tstats-spec.XXXXXX"))
  assert(d ~= "", "mktemp -d failed")
  tmpdirs[#tmpdirs + 1] = d
  return d
end

local function now()
  -- Sub-second wall clock; os.time() is whole seconds and os.clock() is CPU time.
  local s = sh("date +%s.%N")
  return tonumber(s) or os.time()
end
stack.now = now

function stack.sleep(s)
  os.execute("sleep " .. tostring(s))
end

-- Polls fn() until it returns a truthy value or timeout_s passes.
-- Returns the truthy value, or false plus the last value seen.
function stack.wait_until(fn, timeout_s, interval_s)
  timeout_s = timeout_s or 10
  interval_s = interval_s or 0.1
  local deadline = now() + timeout_s
  local last
  repeat
    last = fn()
    if last then return last end
    stack.sleep(interval_s)
  until now() >= deadline
  last = fn()
  if last then return last end
  return false, last
end

local function env_prefix(env)
  if not env then return "" end
  local parts = {}
  for k, v in pairs(env) do
    assert(tostring(k):match("^[%a_][%w_]*$"), "bad env name " .. tostring(k))
    parts[#parts + 1] = k .. "=" .. q(v)
  end
  table.sort(parts)
  return #parts > 0 and ("env " .. table.concat(parts, " ") .. " ") or ""
end

-- run(cmd, opts) -> exit_code, stdout, stderr. cmd is a shell command line.
-- opts.timeout (s; exit 124 when it fires), opts.env (table), opts.stdin (string), opts.cwd.
function stack.run(cmd, opts)
  opts = opts or {}
  local d = stack.tmpdir()
  local out, err, inp = d .. "/stdout", d .. "/stderr", "/dev/null"
  if opts.stdin then
    inp = d .. "/stdin"
    write_file(inp, opts.stdin)
  end
  local line = env_prefix(opts.env)
  if opts.timeout then
    line = line .. "timeout -k 5 " .. tostring(opts.timeout) .. " "
  end
  line = line .. "sh -c " .. q(cmd)
  if opts.cwd then line = "cd " .. q(opts.cwd) .. " && " .. line end
  line = "(" .. line .. ") <" .. q(inp) .. " >" .. q(out) .. " 2>" .. q(err)
  local ok, how, code = os.execute(line)
  local rc
  if ok then rc = 0 elseif how == "signal" then rc = 128 + code else rc = code end
  local o, e = read_file(out) or "", read_file(err) or ""
  os.execute("rm -rf " .. q(d))
  tmpdirs[#tmpdirs] = nil
  return rc, o, e
end

-- spawn(cmd, logfile, opts) -> {pid=, wait=fn(self, timeout_s), kill=fn(self, sig), alive=fn}
-- cmd runs in its own session; pid is the command's own pid (signals reach it directly).
-- wait returns its exit code (128+N when killed by signal N), or nil on timeout.
function stack.spawn(cmd, logfile, opts)
  opts = opts or {}
  local d = stack.tmpdir()
  logfile = logfile or (d .. "/log")
  local pidf, rcf = d .. "/pid", d .. "/rc"
  -- dash does not exec the last command of `sh -c`: without `exec` the pid
  -- would be the shell's and signals would never reach the program.
  local run = cmd
  if not cmd:find("[;&|()\n`]") and not cmd:match("^%s*exec%s") then run = "exec " .. cmd end
  local inner = env_prefix(opts.env) .. "sh -c " .. q(run)
  local wrapper = inner .. " </dev/null >>" .. q(logfile) .. " 2>&1 & echo $! >" .. q(pidf)
    .. ".tmp; mv " .. q(pidf .. ".tmp") .. " " .. q(pidf) .. "; wait $!; echo $? >" .. q(rcf .. ".tmp")
    .. "; mv " .. q(rcf .. ".tmp") .. " " .. q(rcf)
  if opts.cwd then wrapper = "cd " .. q(opts.cwd) .. " && " .. wrapper end
  local sid = tonumber((sh("setsid sh -c " .. q(wrapper) .. " </dev/null >/dev/null 2>&1 & echo $!")))
  assert(sid, "spawn failed: " .. cmd)
  local pid
  stack.wait_until(function()
    pid = tonumber(read_file(pidf) or "")
    return pid
  end, 10, 0.02)
  assert(pid, "spawn: no pid for " .. cmd)
  local h = { pid = pid, sid = sid, log = logfile, dir = d }
  -- sh -c CMD with a single simple command execs it, so pid is the program;
  -- with compound commands the group kill in cleanup still reaches everything.
  local wd = watchdog("kill -KILL -" .. sid .. " 2>/dev/null", d)
  function h.alive(self)
    return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
  end
  function h.kill(self, sig)
    sig = sig or "TERM"
    return os.execute("kill -" .. tostring(sig) .. " " .. self.pid .. " 2>/dev/null") == true
  end
  function h.wait(self, timeout_s)
    local rc = stack.wait_until(function() return tonumber(read_file(rcf) or "") end,
      timeout_s or 30, 0.05)
    if rc then self.exit_code = rc end
    return rc or nil
  end
  function h.stop(self)
    if self.stopped then return self.exit_code end
    self.stopped = true
    if self:alive() then
      self:kill("TERM")
      if not self:wait(10) then
        os.execute("kill -KILL -" .. self.sid .. " 2>/dev/null")
        self:wait(5)
      end
    end
    os.execute("kill -KILL -" .. self.sid .. " 2>/dev/null")
    if wd then os.execute("kill " .. wd .. " 2>/dev/null") end
    return self.exit_code
  end
  started[#started + 1] = h
  return h
end

function stack.free_port()
  local p = sh("bash -c " .. q(". " .. q(stack.root() .. "/scripts/lib/ports.sh") .. " && ts_free_port"))
  return assert(tonumber(p), "free_port failed")
end

-- influxd_start(opts) -> {url=, port=, dir=, user=, password=, stop=fn}
-- opts.auth = {user=, password=}; opts.port forces the HTTP port (TS_INFLUX_PORT).
-- Raises an error carrying influxd.sh's stderr on failure.
function stack.influxd_start(opts)
  opts = opts or {}
  local dir = stack.tmpdir() .. "/influxd"
  local cmd = q(stack.root() .. "/scripts/lib/influxd.sh") .. " start " .. q(dir)
  if opts.auth then
    cmd = cmd .. " --auth " .. q(opts.auth.user .. ":" .. opts.auth.password)
  end
  local env = opts.env or {}
  if opts.port then env.TS_INFLUX_PORT = tostring(opts.port) end
  local rc, out, err = stack.run(cmd, { env = env, timeout = 90 })
  if rc ~= 0 then
    error("influxd.sh start failed (exit " .. rc .. "): " .. err .. out, 2)
  end
  -- Registered before anything else can fail, so cleanup always finds it.
  local h = { dir = dir, user = opts.auth and opts.auth.user, password = opts.auth and opts.auth.password }
  local wd
  function h.stop(self)
    if self.stopped then return end
    self.stopped = true
    os.execute(q(stack.root() .. "/scripts/lib/influxd.sh") .. " stop " .. q(self.dir))
    if wd then os.execute("kill " .. wd .. " 2>/dev/null") end
  end
  started[#started + 1] = h
  h.url = trim(out)
  h.port = tonumber(trim(read_file(dir .. "/http_port")))
  h.pid = tonumber(trim(read_file(dir .. "/pid")))
  assert(h.port and h.pid, "influxd.sh start wrote no port/pid in " .. dir)
  wd = watchdog("kill -TERM " .. h.pid .. " 2>/dev/null; sleep 5; kill -KILL " .. h.pid .. " 2>/dev/null",
    dir:match("^(.*)/influxd$"))
  started[#started + 1] = h
  return h
end

-- pg_start() -> {conninfo=, port=, password=, dir=, psql=fn(self, sql), stop=fn}
function stack.pg_start()
  local dir = stack.tmpdir() .. "/pg"
  local script = q(stack.root() .. "/scripts/lib/pg.sh")
  local rc, out, err = stack.run(script .. " start " .. q(dir), { timeout = 120 })
  if rc ~= 0 then
    error("pg.sh start failed (exit " .. rc .. "): " .. err .. out, 2)
  end
  local h = { dir = dir }
  local wd
  function h.stop(self)
    if self.stopped then return end
    self.stopped = true
    os.execute(script .. " stop " .. q(self.dir))
    if wd then os.execute("kill " .. wd .. " 2>/dev/null") end
  end
  started[#started + 1] = h
  wd = watchdog(script .. " stop " .. q(dir), dir:match("^(.*)/pg$"))
  h.conninfo = trim(out)
  h.port = tonumber(trim(read_file(dir .. "/port")))
  h.password = trim(read_file(dir .. "/password"))
  -- psql(sql) -> output (unaligned, tuples only); raises on SQL errors.
  function h.psql(self, sql)
    local prc, pout, perr = stack.run(script .. " psql " .. q(self.dir) .. " " .. q(sql), { timeout = 60 })
    if prc ~= 0 then error("psql failed: " .. perr, 2) end
    return pout
  end
  started[#started + 1] = h
  return h
end

-- The daily summary's set-up against pg (a stack.pg_start handle).
-- summary_day() -> D, date, pattern: the newest closed UTC day with summary.grace 600 (the
-- only day a first tick has to do), its "YYYY-MM-DD" and that date as a Lua pattern.
function stack.summary_day()
  local DAY = 86400
  local D = (os.time() - 600) // DAY * DAY - DAY
  local date = os.date("!%Y-%m-%d", D)
  return D, date, (date:gsub("%-", "%%-"))
end

-- pg_hold_lock(pg, dir) -> a spawned psql holding the advisory lock the summary's
-- transaction takes first (so a summary waits inside that transaction); dir gets its log.
function stack.pg_hold_lock(pg, dir)
  local lock_sql = "SELECT pg_advisory_lock(hashtext('tstats.stats_summary')); SELECT pg_sleep(600)"
  local locker = stack.spawn(q(stack.root() .. "/scripts/lib/pg.sh") .. " psql " .. q(pg.dir) .. " " .. q(lock_sql),
    dir .. "/locker.log")
  assert(stack.wait_until(function()
    return pg:psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"):match("^%s*1")
  end, 20, 0.2), "the lock was not taken: " .. tostring(read_file(dir .. "/locker.log")))
  return locker
end

-- pg_release_lock(pg, locker): the holder's backend goes (a client killed in pg_sleep would
-- leave it holding the lock), then its psql.
function stack.pg_release_lock(pg, locker)
  pg:psql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
  locker:stop()
end

-- pg_lock_waiters(pg) -> the pids of the backends waiting for an advisory lock (a list).
function stack.pg_lock_waiters(pg)
  local pids = {}
  for p in pg:psql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):gmatch("%d+") do
    pids[#pids + 1] = tonumber(p)
  end
  return pids
end

-- summary_rows(pg, date) -> rows of stats_summary, rows of that date, duplicated
-- (date, cdn, ds, stat) keys.
function stack.summary_rows(pg, date)
  local function n(sql) return tonumber((pg:psql(sql):match("%d+"))) end
  return n("SELECT count(*) FROM stats_summary"),
    n(("SELECT count(*) FROM stats_summary WHERE stat_date = '%s'"):format(date)),
    n("SELECT count(*) FROM (SELECT 1 FROM stats_summary GROUP BY stat_date, cdn_name, "
      .. "deliveryservice_name, stat_name HAVING count(*) > 1) x")
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end
stack.urlencode = urlencode

local function curl_auth(opts)
  if opts and opts.user then
    return " -u " .. q(opts.user .. ":" .. (opts.password or ""))
  end
  return ""
end

-- influx_query(url, q, db, opts) -> decoded JSON (or nil, raw body), http_status.
-- POST, so that CREATE/DROP work as well as SELECT/SHOW.
function stack.influx_query(url, query, db, opts)
  opts = opts or {}
  local args = " --data-urlencode " .. q("q=" .. query)
  if db then args = args .. " --data-urlencode " .. q("db=" .. db) end
  if opts.epoch then args = args .. " --data-urlencode " .. q("epoch=" .. opts.epoch) end
  if opts.rp then args = args .. " --data-urlencode " .. q("rp=" .. opts.rp) end
  local cmd = "curl -sS -m 30 -XPOST -w '\\n%{http_code}'" .. curl_auth(opts) .. args .. " " .. q(url .. "/query")
  local rc, out, err = stack.run(cmd)
  if rc ~= 0 then error("curl /query failed: " .. err, 2) end
  local body, status = out:match("^(.*)\n(%d+)$")
  status = tonumber(status)
  local ok, decoded = pcall(cjson.decode, body or "")
  if not ok then return nil, status, body end
  return decoded, status, body
end

-- Points a daemon accepted: the sum of its log's "Collected N ... values" lines.
function stack.polled(log)
  local n = 0
  for k in (stack.read_file(log) or ""):gmatch("Collected (%d+) [%w ]- values for") do n = n + tonumber(k) end
  return n
end

-- Points stored in the raw RPs of both stats databases (every measurement) of url.
function stack.stored(url)
  local total = 0
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(url, 'SELECT count(value) FROM "daily"./.*/', db)
    local r = d and d.results and d.results[1]
    for _, s in ipairs(r and r.series or {}) do total = total + (s.values[1][2] or 0) end
  end
  return math.tointeger(total) or total
end

-- The newest point time (epoch ms) in the raw RPs of both stats databases of url (0: none).
function stack.newest_ms(url)
  local newest = 0
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(url, 'SELECT last(value) FROM "daily"./.*/', db, { epoch = "ms" })
    local r = d and d.results and d.results[1]
    for _, s in ipairs(r and r.series or {}) do
      local t = tonumber(s.values[1][1]) or 0
      if t > newest then newest = t end
    end
  end
  return newest
end

-- Every stored point of url's raw RPs as a "db measurement tags time" key, added to set.
function stack.point_keys(url, set)
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    local d = stack.influx_query(url, 'SELECT value FROM "daily"./.*/ GROUP BY *', db, { epoch = "ms" })
    local r = d and d.results and d.results[1]
    for _, sr in ipairs(r and r.series or {}) do
      local tags = {}
      for k, v in pairs(sr.tags or {}) do tags[#tags + 1] = k .. "=" .. tostring(v) end
      table.sort(tags)
      local prefix = db .. " " .. sr.name .. " " .. table.concat(tags, ",") .. " "
      for _, v in ipairs(sr.values) do set[prefix .. tostring(math.tointeger(v[1]) or v[1])] = true end
    end
  end
  return set
end

function stack.set_size(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- influx_write(url, db, body, precision, rp, opts) -> http_status, response_body
-- opts.gzip = true sends the body gzip-compressed.
function stack.influx_write(url, db, body, precision, rp, opts)
  opts = opts or {}
  local d = stack.tmpdir()
  local bodyf, respf = d .. "/body", d .. "/resp"
  write_file(bodyf, body)
  local hdr = ""
  if opts.gzip then
    os.execute("gzip -n -c " .. q(bodyf) .. " >" .. q(bodyf .. ".gz"))
    bodyf = bodyf .. ".gz"
    hdr = " -H 'Content-Encoding: gzip'"
  end
  local qs = "db=" .. urlencode(db)
  if precision then qs = qs .. "&precision=" .. urlencode(precision) end
  if rp then qs = qs .. "&rp=" .. urlencode(rp) end
  local cmd = "curl -sS -m 30 -XPOST -o " .. q(respf) .. " -w '%{http_code}'" .. hdr .. curl_auth(opts)
    .. " --data-binary @" .. q(bodyf) .. " " .. q(url .. "/write?" .. qs)
  local rc, out, err = stack.run(cmd)
  local resp = read_file(respf) or ""
  os.execute("rm -rf " .. q(d))
  if rc ~= 0 then error("curl /write failed: " .. err, 2) end
  return tonumber(out), resp
end

-- Flattens a /query answer to rows { {col=value,...}, ... } of the first series of the
-- first result. Takes only the decoded table, so influx_rows(influx_query(...)) works.
function stack.influx_rows(decoded)
  local res = decoded and decoded.results and decoded.results[1]
  local series = res and res.series and res.series[1]
  if not series then return {} end
  local rows = {}
  for _, v in ipairs(series.values or {}) do
    local row = {}
    for i, col in ipairs(series.columns) do row[col] = v[i] end
    rows[#rows + 1] = row
  end
  return rows
end

-- influxd_start_atc(opts) -> influxd_start's handle, with ATC's databases, retention
-- policies and continuous queries created by `tstats setup-influx`.
function stack.influxd_start_atc(opts)
  local h = stack.influxd_start(opts)
  local rc, _, err = stack.run(q(stack.bin("tstats")) .. " setup-influx --replication 1",
    { env = { TSTATS_INFLUX_URL = h.url } })
  assert(rc == 0, "tstats setup-influx failed: " .. tostring(err))
  return h
end

-- Drops every series of the stats databases (between specs sharing one influxd).
function stack.influx_drop_series(url)
  for _, db in ipairs({ "cache_stats", "deliveryservice_stats" }) do
    stack.influx_query(url, "DROP SERIES FROM /.*/", db)
  end
end

-- sim_start(args, opts) -> spawn handle of a running tstats-sim (see docs/SIMULATOR.md), with
-- .info (its decoded ready file), .to_url, .dir (its tmpdir), .ready (the ready file's path),
-- .post(path) and .get(path) (curl against Traffic Ops' side, raise on a curl error),
-- .stats() (GET /sim/stats decoded) and .monitor(cdn, idx) (a monitor's ready-file entry).
-- opts.dir: the directory for ready.json and sim.log (a fresh tmpdir when absent);
-- opts.timeout: seconds to wait for the ready file (15).
function stack.sim_start(args, opts)
  opts = opts or {}
  local dir = opts.dir or stack.tmpdir()
  local ready = dir .. "/ready.json"
  local log = dir .. "/sim.log"
  -- "exec" so that the spawned pid is the sim itself and SIGTERM reaches it.
  local h = stack.spawn("exec " .. q(stack.bin("tstats-sim")) .. " --ready-file " .. q(ready) .. " "
    .. (args or ""), log)
  local info = stack.wait_until(function()
    local s = read_file(ready)
    if not s or s == "" then return nil end
    local ok, t = pcall(cjson.decode, s)
    return ok and t or nil
  end, opts.timeout or 15, 0.05)
  assert(info, "simulator did not start: " .. tostring(read_file(log)))
  h.info, h.to_url, h.dir, h.ready = info, info.to_url, dir, ready
  function h.get(path)
    local rc, out, err = stack.run("curl -sS -m 10 " .. q(h.to_url .. path))
    assert(rc == 0, "GET " .. path .. ": " .. err .. out)
    return out
  end
  function h.post(path)
    local rc, out, err = stack.run("curl -sS -m 10 -XPOST " .. q(h.to_url .. path))
    assert(rc == 0, "POST " .. path .. ": " .. err .. out)
    return out
  end
  function h.stats() return cjson.decode(h.get("/sim/stats")) end
  -- The ready file's entry of CDN cdn's monitor number idx (0-based).
  function h.monitor(cdn, idx)
    for _, m in ipairs(info.monitors or {}) do if m.cdn == cdn and m.index == idx then return m end end
  end
  return h
end

-- config(o) -> the text of a tstats config for a daemon under test: Traffic Ops at o.to_url
-- (user admin, o.to_password or the sim's "twelve12", o.to_timeout or 3, o.to_extra),
-- InfluxDB at o.influx_url (or the list o.influx_urls; o.influx_extra inside its table),
-- o.polling / o.publishing intervals (1 s each), o.config_interval when given, o.state_dir,
-- collect = { o.collect } (default timeout 2, connect_timeout 1; false leaves it out),
-- summary = o.summary (default disabled; false leaves it out), then o.extra verbatim.
-- Every string field is Lua source except the URLs, the password and state_dir. The lines
-- are, in order: traffic_ops, influxdb, the intervals and state_dir, collect, summary, extra
-- (a spec that checks a file:line of its extra counts on that).
function stack.config(o)
  local urls = {}
  for _, u in ipairs(o.influx_urls or { o.influx_url }) do urls[#urls + 1] = ("%q"):format(u) end
  local parts = {
    ("  traffic_ops = { url = %q, user = \"admin\", password = %q, timeout = %s%s },"):format(
      o.to_url, o.to_password or "twelve12", tostring(o.to_timeout or 3),
      o.to_extra and (", " .. o.to_extra) or ""),
    ("  influxdb = { urls = { %s }%s },"):format(table.concat(urls, ", "),
      o.influx_extra and (", " .. o.influx_extra) or ""),
    ("  polling_interval = %s, publishing_interval = %s,%s%s"):format(tostring(o.polling or 1),
      tostring(o.publishing or 1), o.config_interval and (" config_interval = " .. o.config_interval .. ",") or "",
      o.state_dir and (" state_dir = %q,"):format(o.state_dir) or ""),
  }
  if o.collect ~= false then
    parts[#parts + 1] = "  collect = { " .. (o.collect or "timeout = 2, connect_timeout = 1") .. " },"
  end
  if o.summary ~= false then parts[#parts + 1] = "  summary = " .. (o.summary or "{ enabled = false }") .. "," end
  if o.extra and o.extra ~= "" then parts[#parts + 1] = "  " .. o.extra end
  return "return {\n" .. table.concat(parts, "\n") .. "\n}\n"
end

-- write_config(path, o) -> path, with stack.config(o) written there.
function stack.write_config(path, o)
  write_file(path, stack.config(o))
  return path
end

function stack.cleanup_all()
  for i = #started, 1, -1 do
    local h = started[i]
    started[i] = nil
    local ok, err = pcall(h.stop, h)
    if not ok then io.stderr:write("stack.cleanup_all: ", tostring(err), "\n") end
  end
  for i = #tmpdirs, 1, -1 do
    os.execute("rm -rf " .. q(tmpdirs[i]))
    tmpdirs[i] = nil
  end
end

-- Exit-time cleanup: busted ends with os.exit(code, true), which closes the
-- Lua state and so runs this finalizer even when a spec failed.
stack._sentinel = setmetatable({}, { __gc = function() stack.cleanup_all() end })

return stack
