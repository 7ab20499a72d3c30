-- `tstats sync` (Lua side): copies InfluxDB 1.x data from --source to --target
-- where the target's value is missing or lower (the rule of ATC's
-- sync_ts_databases), every tag kept, in bounded time chunks. Answers are
-- decoded with tstats.json.decode_exact (nanosecond times and integer fields
-- stay exact) and field types come from SHOW FIELD KEYS, so integers are
-- written back as integers. Completed chunks are kept in the state dir: an
-- interrupted sync resumes there and a rerun of a finished one writes nothing.
local tstats = require "tstats"

local M = {}

M.name = "sync"
M.summary = "copy InfluxDB data between two instances where the target is missing or lower"
M.usage = [==[
usage: tstats sync --source URL --target URL [--database DB] [--days N | --from D [--to D]]
                   [--measurement NAME[,NAME...]] [--rp RP] [--chunk DURATION] [--dry-run]
                   [--restart] [--state-dir DIR] [--max-chunk-bytes N] [--batch N]

Copies every point of the selected measurements from --source to --target
unless the target already holds it with an equal or higher value (as ATC's
sync_ts_databases), keeping every tag. Both URLs are required and must differ.
  --database    cache_stats | deliveryservice_stats | daily_stats | all (default all)
  --days N      the last N days; --from/--to YYYY-MM-DD (--to inclusive) or
                YYYY-MM-DDTHH:MM:SSZ (exclusive); default: all the data there is
  --measurement names or globs (bandwidth.*) among the database's continuous-query
                series (default: all of them, ATC's list plus the maxkbps and wrap_count series)
  --rp RP       sync the --measurement names in policy RP instead (e.g. raw data in "daily")
  --chunk D     time per query (30m, 6h, 1d; default 6h for 1-minute series, 30d for daily ones);
                a chunk whose answer exceeds --max-chunk-bytes (default 64 MiB) is halved
  --dry-run     count what would be written, write nothing
  --restart     ignore the completed chunks recorded in the state dir
  --state-dir   where progress is kept (default: state_dir of the configuration)
Credentials come from the environment: SYNC_SOURCE_USER, SYNC_SOURCE_PASSWORD,
SYNC_TARGET_USER, SYNC_TARGET_PASSWORD. TLS: SYNC_SOURCE_CA_FILE / SYNC_TARGET_CA_FILE,
SYNC_SOURCE_INSECURE=1 / SYNC_TARGET_INSECURE=1 (logged as a warning).
Exit 0 when everything was copied, 1 when anything failed (each failure is counted and logged).]==]
M.options = {
  source = "value", target = "value", database = "value", days = "value", from = "value", to = "value",
  measurement = "value", rp = "value", chunk = "value", ["dry-run"] = "flag", restart = "flag",
  ["state-dir"] = "value", ["max-chunk-bytes"] = "value", batch = "value", timeout = "value",
}

local MIN, HOUR, DAY = 60, 3600, 86400
local NS = 1000000000

-- The continuous queries' series (ATC's sync list first, in its order; then
-- the ones it left out), with the policy they live in.
M.SETS = {
  cache_stats = {
    { "monthly", "bandwidth.cdn.1min" }, { "monthly", "connections.cdn.1min" },
    { "monthly", "connections.cdn.type.1min" }, { "monthly", "bandwidth.cdn.type.1min" },
    { "monthly", "bandwidth.1min" }, { "monthly", "connections.1min" },
    { "monthly", "maxkbps.cdn.1min" }, { "monthly", "maxkbps.1min" }, { "monthly", "wrap_count.1min" },
  },
  deliveryservice_stats = {
    { "monthly", "kbps.ds.1min" }, { "indefinite", "max.kbps.ds.1day" }, { "monthly", "kbps.cg.1min" },
    { "monthly", "tps_2xx.ds.1min" }, { "monthly", "tps_3xx.ds.1min" }, { "monthly", "tps_4xx.ds.1min" },
    { "monthly", "tps_5xx.ds.1min" }, { "monthly", "tps_total.ds.1min" },
  },
  daily_stats = { { "indefinite", "daily_bytesserved" }, { "indefinite", "daily_maxgbps" } },
}
M.DB_ORDER = { "cache_stats", "deliveryservice_stats", "daily_stats" }

-- Series still being rewritten by the continuous queries (RESAMPLE FOR 2m/5m,
-- 2d for the daily maximum) are synced but not recorded as done for this long.
local function settle_s(db, m)
  if m:match("1day$") then return 3 * DAY end
  if db == "daily_stats" then return 2 * DAY end
  return 15 * MIN
end
local function default_chunk_s(db, m)
  if db == "daily_stats" or m:match("1day$") then return 30 * DAY end
  return 6 * HOUR
end

-- ---- small helpers ----
local function ident(s) return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"' end
local function esc_meas(s) return (s:gsub("[, \\]", "\\%0")) end
local function esc_tag(s) return (s:gsub("[,= \\]", "\\%0")) end
local function esc_str(s) return '"' .. s:gsub('[\\"]', "\\%0") .. '"' end

function M.parse_duration(s)
  local n, u = tostring(s or ""):match("^(%d+)([smhd]?)$")
  if not n then return nil end
  return math.tointeger(tonumber(n)) * ({ s = 1, [""] = 1, m = MIN, h = HOUR, d = DAY })[u]
end

-- YYYY-MM-DD (the day's start; `inclusive_end` gives the next day's start) or
-- YYYY-MM-DDTHH:MM:SSZ, as Unix seconds.
function M.parse_time(s, inclusive_end)
  local civil = require "tstats.civil"
  local y, mo, d = tostring(s or ""):match("^(%d%d%d%d)-(%d%d)-(%d%d)$")
  if y then
    local t = civil.days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * DAY
    return inclusive_end and t + DAY or t
  end
  local hh, mi, ss
  y, mo, d, hh, mi, ss = tostring(s or ""):match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  if y then
    return civil.days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * DAY + tonumber(hh) * HOUR
      + tonumber(mi) * MIN + tonumber(ss)
  end
  return nil
end

local function fnv1a(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do h = (h ~ s:byte(i)) * 0x100000001b3 end
  return ("%016x"):format(h)
end

local function norm_url(u)
  u = u:gsub("/+$", "")
  local scheme, rest = u:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil end
  local hostport, path = rest:match("^([^/]*)(.*)$")
  hostport = hostport:gsub("^[^@]*@", ""):lower()
  if not hostport:find(":%d+$") and not hostport:find("%]$") then
    hostport = hostport .. (scheme:lower() == "https" and ":443" or ":80")
  end
  hostport = hostport:gsub("^localhost:", "127.0.0.1:"):gsub("^%[::1%]:", "127.0.0.1:")
  return scheme:lower() .. "://" .. hostport .. path
end
M.norm_url = norm_url

-- Shortest text that reads back as the same double.
local function float_text(v)
  if math.type(v) == "integer" then return tostring(v) end
  for p = 15, 17 do
    local s = ("%." .. p .. "g"):format(v)
    if tonumber(s) == v then return s end
  end
  return ("%.17g"):format(v)
end

-- ---- InfluxDB over tstats.http ----
local function endpoint(url, prefix, timeout)
  local e = {
    url = url:gsub("/+$", ""), user = os.getenv(prefix .. "_USER"), password = os.getenv(prefix .. "_PASSWORD"),
    ca_file = os.getenv(prefix .. "_CA_FILE"), insecure = os.getenv(prefix .. "_INSECURE") == "1",
    timeout = timeout, name = prefix == "SYNC_SOURCE" and "source" or "target",
  }
  if e.user == "" then e.user = nil end
  if e.ca_file == "" then e.ca_file = nil end
  return e
end

local function request(ep, path, body, max_body)
  local last
  for attempt = 1, 3 do
    local res, err = tstats.http.request {
      url = ep.url .. path, method = body and "POST" or "GET", body = body,
      content_type = body and (path:match("^/write") and "text/plain; charset=utf-8"
        or "application/x-www-form-urlencoded") or nil,
      user = ep.user, password = ep.password, timeout = ep.timeout, connect_timeout = 5,
      ca_file = ep.ca_file, insecure = ep.insecure, max_body = max_body,
    }
    if res and res.status < 500 then return res end
    last = res and ("HTTP %d: %s"):format(res.status, (res.body or ""):sub(1, 300)) or err
    if err and err:find("response body larger than", 1, true) then return nil, err, "too_big" end
    if attempt < 3 then tstats.sleep(attempt) end
  end
  return nil, last
end

local function form(t)
  local enc, parts = tstats.http.urlencode, {}
  for _, k in ipairs({ "q", "db", "epoch" }) do
    if t[k] then parts[#parts + 1] = k .. "=" .. enc(t[k]) end
  end
  return table.concat(parts, "&")
end

-- Series of one statement, or nil, err, kind.
local function query(ep, db, q, max_body)
  local res, err, kind = request(ep, "/query", form { q = q, db = db, epoch = "ns" }, max_body)
  if not res then return nil, ep.name .. ": " .. tostring(err), kind end
  if res.status ~= 200 then
    return nil, ("%s: HTTP %d: %s"):format(ep.name, res.status, res.body:sub(1, 300))
  end
  local doc, derr = tstats.json.decode_exact(res.body)
  res = nil
  if type(doc) ~= "table" then return nil, ep.name .. ": unparsable answer: " .. tostring(derr) end
  if doc.error then return nil, ep.name .. ": " .. tostring(doc.error) end
  local out = {}
  for _, r in ipairs(doc.results or {}) do
    if r.error then return nil, ep.name .. ": " .. tostring(r.error) end
    for _, s in ipairs(r.series or {}) do out[#out + 1] = s end
  end
  return out
end

local function ping(ep)
  local res, err = request(ep, "/ping")
  if not res then return nil, err end
  if res.status ~= 204 and res.status ~= 200 then return nil, ("HTTP %d"):format(res.status) end
  return true
end

-- ---- state: completed [a, b) intervals (ns) per db/rp/measurement ----
local State = {}
State.__index = State

function State.open(dir, key)
  local s = setmetatable({ path = dir and (dir .. "/sync-" .. fnv1a(key) .. ".state"), done = {}, key = key }, State)
  if s.path then
    local f = io.open(s.path, "r")
    if f then
      local first = f:read("l")
      if first == "# tstats sync state v1 " .. key:gsub("\n", " ") then
        for line in f:lines() do
          local id, a, b = line:match("^(.-)\t(%-?%d+)\t(%-?%d+)$")
          if id then s:add(id, math.tointeger(tonumber(a)), math.tointeger(tonumber(b)), true) end
        end
      end
      f:close()
    end
  end
  return s
end

function State:add(id, a, b, no_save)
  local l = self.done[id] or {}
  l[#l + 1] = { a, b }
  table.sort(l, function(x, y) return x[1] < y[1] end)
  local merged = {}
  for _, iv in ipairs(l) do
    local last = merged[#merged]
    if last and iv[1] <= last[2] then
      if iv[2] > last[2] then last[2] = iv[2] end
    else
      merged[#merged + 1] = { iv[1], iv[2] }
    end
  end
  self.done[id] = merged
  if not no_save then return self:save() end
  return true
end

function State:covers(id, a, b)
  for _, iv in ipairs(self.done[id] or {}) do
    if iv[1] <= a and b <= iv[2] then return true end
  end
  return false
end

function State:save()
  if not self.path then return true end
  local tmp = self.path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  f:write("# tstats sync state v1 ", (self.key:gsub("\n", " ")), "\n")
  local ids = {}
  for id in pairs(self.done) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    for _, iv in ipairs(self.done[id]) do f:write(id, "\t", iv[1], "\t", iv[2], "\n") end
  end
  f:close()
  local ok, rerr = os.rename(tmp, self.path)
  if not ok then return nil, rerr end
  return true
end

-- ---- the sync proper ----
local function tags_key(tags)
  if not tags then return "" end
  local keys = {}
  for k, v in pairs(tags) do if v ~= "" then keys[#keys + 1] = k end end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = esc_tag(k) .. "=" .. esc_tag(tags[k]) end
  return table.concat(keys, ",")
end

local function field_types(ep, db, rp, m)
  local series, err = query(ep, db, ("SHOW FIELD KEYS FROM %s.%s"):format(ident(rp), ident(m)))
  if not series then return nil, err end
  local types, conflicts = {}, {}
  for _, s in ipairs(series) do
    for _, row in ipairs(s.values or {}) do
      local k, t = row[1], row[2]
      if types[k] and types[k] ~= t then conflicts[#conflicts + 1] = k end
      types[k] = types[k] or t
    end
  end
  return types, conflicts
end

local function bound(ep, db, rp, m, a, b, order)
  local series, err = query(ep, db, ("SELECT * FROM %s.%s WHERE time >= %d AND time < %d ORDER BY time %s LIMIT 1")
    :format(ident(rp), ident(m), a, b, order))
  if not series then return nil, err end
  local s = series[1]
  if not s or not s.values or not s.values[1] then return false end
  return s.values[1][1]
end

local function fmt_time(ns)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", ns // NS)
end

local function rss_kib()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)"))
end

local Sync = {}
Sync.__index = Sync

function Sync:log(level, msg)
  if self.tty and self.progress_open then io.stderr:write("\n"); self.progress_open = false end
  tstats[level]("sync: " .. msg)
end

function Sync:error(msg, n)
  self.errors = self.errors + (n or 1)
  self:log("error", msg)
end

function Sync:progress(job, i, n, a)
  local line = ("%s %s.%s chunk %d/%d %s  read %d  written %d  errors %d"):format(job.db, job.rp, job.m, i, n,
    fmt_time(a), self.read, self.written, self.errors)
  if self.tty then
    io.stderr:write("\r", line, "\27[K")
    self.progress_open = true
  elseif i == n or i % math.max(1, n // 10) == 0 then
    io.stderr:write(line, "\n")
  end
end

function Sync:write(job, lines)
  if #lines == 0 then return true end
  if self.dry_run then self.written = self.written + #lines; return true end
  local path = ("/write?db=%s&rp=%s&precision=ns"):format(tstats.http.urlencode(job.db), tstats.http.urlencode(job.rp))
  local res, err = request(self.target, path, table.concat(lines, "\n") .. "\n")
  if res and (res.status == 204 or res.status == 200) then
    self.written = self.written + #lines
    return true
  end
  self:error(("%s.%s: write of %d points failed: %s"):format(job.rp, job.m,
    #lines, res and ("HTTP %d: %s"):format(res.status, res.body:sub(1, 300)) or tostring(err)), #lines)
  return false
end

-- One window [a, b) of one measurement. Returns true when every point is in
-- the target (or was counted as failed: then false).
function Sync:window(job, a, b)
  local sel = ("SELECT * FROM %s.%s WHERE time >= %d AND time < %d GROUP BY *"):format(ident(job.rp),
    ident(job.m), a, b)
  local src, err, kind = query(self.source, job.db, sel, self.max_body)
  if not src and kind == "too_big" and b - a > NS then
    local mid = a + (b - a) // 2
    self.splits = self.splits + 1
    local ok1 = self:window(job, a, mid)
    local ok2 = self:window(job, mid, b)
    return ok1 and ok2
  end
  if not src then self:error(("%s.%s %s: %s"):format(job.rp, job.m, fmt_time(a), err)); return false end
  local npoints = 0
  for _, s in ipairs(src) do npoints = npoints + #(s.values or {}) end
  if npoints == 0 then return true end
  self.read = self.read + npoints
  local dst
  dst, err, kind = query(self.target, job.db, sel, self.max_body)
  if not dst and kind == "too_big" and b - a > NS then
    local mid = a + (b - a) // 2
    self.splits = self.splits + 1
    src = nil
    local ok1 = self:window(job, a, mid)
    local ok2 = self:window(job, mid, b)
    return ok1 and ok2
  end
  if not dst then self:error(("%s.%s %s: %s"):format(job.rp, job.m, fmt_time(a), err), npoints); return false end
  -- the target's points by series and time: row plus its series' column index
  local have = {}
  for _, s in ipairs(dst) do
    local cols = {}
    for i, c in ipairs(s.columns) do cols[c] = i end
    local tk = tags_key(s.tags)
    for _, row in ipairs(s.values or {}) do have[tk .. "\0" .. row[1]] = { row, cols } end
  end
  dst = nil
  local ok = true
  local lines = {}
  local types = job.types
  for _, s in ipairs(src) do
    local tk = tags_key(s.tags)
    local prefix = esc_meas(job.m) .. (tk ~= "" and ("," .. tk) or "")
    local cols = s.columns
    for _, row in ipairs(s.values or {}) do
      local t = row[1]
      local tgt = have[tk .. "\0" .. t]
      local needed = false
      local fields = {}
      for i = 2, #cols do
        local v = row[i]
        if v ~= nil then
          local name, ty = cols[i], types[cols[i]]
          local tv = tgt and tgt[1][tgt[2][name]]
          if ty == "float" or ty == "integer" then
            if type(v) ~= "number" or (ty == "integer" and math.type(v) ~= "integer") then
              self:error(("%s.%s: field %s is %s but the answer holds %s"):format(job.rp, job.m, name, ty, tostring(v)))
              ok = false
              goto next_field
            end
            if tv == nil or type(tv) ~= "number" or tv < v then needed = true end
            fields[#fields + 1] = esc_tag(name) .. "=" .. (ty == "integer" and (tostring(v) .. "i") or float_text(v))
          elseif ty == "string" then
            if tv ~= v then needed = true end
            fields[#fields + 1] = esc_tag(name) .. "=" .. esc_str(tostring(v))
          elseif ty == "boolean" then
            if tv ~= v then needed = true end
            fields[#fields + 1] = esc_tag(name) .. "=" .. tostring(v == true)
          else
            self:error(("%s.%s: field %s has no known type on the source"):format(job.rp, job.m, name))
            ok = false
          end
        end
        ::next_field::
      end
      if needed and #fields > 0 then
        lines[#lines + 1] = prefix .. " " .. table.concat(fields, ",") .. " " .. t
        if #lines >= self.batch then
          if not self:write(job, lines) then ok = false end
          lines = {}
        end
      elseif #fields > 0 then
        self.skipped = self.skipped + 1
      end
    end
  end
  if not self:write(job, lines) then ok = false end
  return ok
end

function Sync:measurement(job)
  local types, err = field_types(self.source, job.db, job.rp, job.m)
  if not types then self:error(("%s.%s: %s"):format(job.rp, job.m, err)); return end
  if next(types) == nil then
    self:log("debug", ("%s %s.%s: no such series on the source"):format(job.db, job.rp, job.m))
    return
  end
  local ttypes = field_types(self.target, job.db, job.rp, job.m) or {}
  for k, t in pairs(types) do
    if ttypes[k] and ttypes[k] ~= t then
      self:log("warn", ("%s.%s: field %s is %s on the source and %s on the target: the target will refuse it"):format(
        job.rp, job.m, k, t, ttypes[k]))
    end
  end
  job.types = types
  local first = bound(self.source, job.db, job.rp, job.m, self.from, self.to, "ASC")
  local last = first and bound(self.source, job.db, job.rp, job.m, self.from, self.to, "DESC")
  if first == nil or (first and last == nil) then
    self:error(("%s.%s: cannot find the time range of the data"):format(job.rp, job.m)); return
  end
  if not first then return end
  local chunk = (self.chunk_s or default_chunk_s(job.db, job.m)) * NS
  local lo, hi = math.max(self.from, first), math.min(self.to, last + 1)
  local settled = self.started_ns - settle_s(job.db, job.m) * NS
  local c0 = lo // chunk * chunk
  local n = (hi - 1) // chunk - lo // chunk + 1
  local id = job.db .. "\t" .. job.rp .. "\t" .. job.m
  local i = 0
  local cs = c0
  while cs < hi do
    i = i + 1
    local a, b = math.max(cs, lo), math.min(cs + chunk, hi)
    if not self.restart and self.state:covers(id, a, b) then
      self.resumed = self.resumed + 1
    else
      local ok = self:window(job, a, b)
      -- a full collection per chunk keeps the peak at one chunk's data instead
      -- of the few chunks of garbage the incremental collector lets pile up
      collectgarbage("collect")
      self.chunks = self.chunks + 1
      if ok and not self.dry_run and b <= settled then
        local sok, serr = self.state:add(id, a, b)
        if not sok then self:error("cannot save the state: " .. tostring(serr)) end
      end
    end
    self:progress(job, i, n, a)
    cs = cs + chunk
  end
end

local function glob_match(pat, s)
  local lp = "^" .. pat:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
  return s:match(lp) ~= nil
end

function M.plan(o)
  local dbs = {}
  local db = o.database or "all"
  if db == "all" then dbs = M.DB_ORDER
  elseif M.SETS[db] then dbs = { db }
  else return nil, ("--database must be cache_stats, deliveryservice_stats, daily_stats or all, not '%s'"):format(db) end
  local pats = {}
  local ms = o.measurement
  if type(ms) ~= "table" then ms = { ms } end   -- repeatable, and each may be a comma list
  for _, m in ipairs(ms) do
    for p in tostring(m):gmatch("[^,]+") do pats[#pats + 1] = p end
  end
  local jobs = {}
  if o.rp then
    if #dbs ~= 1 then return nil, "--rp needs a single --database" end
    if #pats == 0 then return nil, "--rp needs --measurement names" end
    for _, p in ipairs(pats) do
      if p:find("*", 1, true) then return nil, "--rp takes measurement names, not globs" end
      jobs[#jobs + 1] = { db = dbs[1], rp = o.rp, m = p }
    end
    return jobs
  end
  local used = {}
  for _, d in ipairs(dbs) do
    for _, rm in ipairs(M.SETS[d]) do
      local want = #pats == 0
      for i, p in ipairs(pats) do
        if glob_match(p, rm[2]) then want = true; used[i] = true end
      end
      if want then jobs[#jobs + 1] = { db = d, rp = rm[1], m = rm[2] } end
    end
  end
  for i, p in ipairs(pats) do
    if not used[i] then
      return nil, ("--measurement '%s' matches none of the continuous-query series of %s (use --rp for others)")
        :format(p, table.concat(dbs, ", "))
    end
  end
  return jobs
end

function M.run(o, rest, tty)
  if #rest > 0 then io.stderr:write(M.usage, "\n"); return 2 end
  local function fail(msg) io.stderr:write("sync: ", msg, "\n"); return 2 end
  if not o.source or not o.target then return fail("--source URL and --target URL are both required (no default)") end
  local ns, nt = norm_url(o.source), norm_url(o.target)
  if not ns or not nt then return fail("--source and --target must be http(s)://host:port URLs") end
  if ns == nt then return fail("--source and --target are the same InfluxDB (" .. ns .. "): refusing to sync it onto itself") end
  local jobs, perr = M.plan(o)
  if not jobs then return fail(perr) end
  local now_ns = tstats.now_ms() * 1000000
  local from, to = math.mininteger // 2, now_ns + DAY * NS
  if o.days then
    if o.from or o.to then return fail("--days and --from/--to exclude each other") end
    local d = math.tointeger(tonumber(o.days))
    if not d or d <= 0 then return fail("--days must be a positive integer") end
    from = now_ns - d * DAY * NS
  else
    if o.from then
      local f = M.parse_time(o.from)
      if not f then return fail("--from must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") end
      from = f * NS
    elseif o.to then
      return fail("--to needs --from")
    end
    if o.to then
      local t = M.parse_time(o.to, true)
      if not t then return fail("--to must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") end
      to = t * NS
    end
    if to <= from then return fail("--to is not after --from") end
  end
  local chunk_s
  if o.chunk then
    chunk_s = M.parse_duration(o.chunk)
    if not chunk_s or chunk_s < 1 then return fail("--chunk must be a duration like 30m, 6h or 1d") end
  end
  local max_body = math.tointeger(tonumber(o["max-chunk-bytes"] or 64 * 1024 * 1024))
  if not max_body or max_body < 4096 then return fail("--max-chunk-bytes must be an integer >= 4096") end
  local batch = math.tointeger(tonumber(o.batch or 5000))
  if not batch or batch < 1 then return fail("--batch must be a positive integer") end
  local timeout = tonumber(o.timeout or 120)
  local cfg = tstats.config or {}
  local state_dir = o["state-dir"] or cfg.state_dir
  if state_dir and not o["dry-run"] then os.execute("mkdir -p '" .. state_dir:gsub("'", "'\\''") .. "'") end

  local s = setmetatable({
    source = endpoint(o.source, "SYNC_SOURCE", timeout), target = endpoint(o.target, "SYNC_TARGET", timeout),
    from = from, to = to, chunk_s = chunk_s, max_body = max_body, batch = batch, dry_run = o["dry-run"],
    restart = o.restart, tty = tty, started_ns = now_ns,
    read = 0, written = 0, skipped = 0, errors = 0, chunks = 0, resumed = 0, splits = 0,
  }, Sync)
  for _, ep in ipairs({ s.source, s.target }) do
    if ep.insecure then tstats.warn(("sync: TLS verification of the %s (%s) is OFF"):format(ep.name, ep.url)) end
  end
  s.state = State.open(state_dir, ns .. "\n" .. nt)
  for _, ep in ipairs({ s.source, s.target }) do
    local ok, err = ping(ep)
    if not ok then io.stderr:write(("sync: the %s %s does not answer: %s\n"):format(ep.name, ep.url, tostring(err))); return 1 end
  end
  local have_db = {}
  local dbs, derr = query(s.target, nil, "SHOW DATABASES")
  if not dbs then io.stderr:write("sync: ", tostring(derr), "\n"); return 1 end
  for _, sr in ipairs(dbs) do for _, r in ipairs(sr.values or {}) do have_db[r[1]] = true end end
  local refused = {}
  for _, job in ipairs(jobs) do
    if not have_db[job.db] then
      if not refused[job.db] then
        refused[job.db] = true
        s:error(("database %s does not exist on the target: run `tstats setup-influx` against it first"):format(job.db))
      end
    else
      s:measurement(job)
    end
  end
  if s.tty and s.progress_open then io.stderr:write("\n") end
  local rss = rss_kib()
  print(("sync%s: %d points read, %d %s, %d already in the target, %d chunks queried, %d resumed past, "
    .. "%d split, %d errors; peak RSS %s"):format(s.dry_run and " (dry run)" or "", s.read, s.written,
    s.dry_run and "would be written" or "written", s.skipped, s.chunks, s.resumed, s.splits, s.errors,
    rss and (("%.1f MiB"):format(rss / 1024)) or "unknown"))
  return s.errors == 0 and 0 or 1
end

-- Entry point of the command table: opts parsed by it, args the positional ones.
function M.main(opts, args, ctx) return M.run(opts, args or {}, ctx and ctx.tty) end

return M
