-- Traffic Ops API v5 client (Lua side, pure Lua over the C core's
-- tstats.http.request and tstats.json). One login, a session cookie kept in
-- the C cookie jar, one re-login on 401 (session expiry): unlike Traffic
-- Stats, which logs in again for every config refresh and every POST.
local to = {}

local API = "/api/5.0"

-- The C core provides `tstats` as a global (and as a module); specs inject a
-- stand-in global. Looked up at call time so a spec can swap it.
local function T()
  local ts = rawget(_G, "tstats")
  if ts == nil then ts = require "tstats" end
  return ts
end

local function log(level, msg)
  local ts = rawget(_G, "tstats")
  local f = type(ts) == "table" and ts[level]
  if type(f) == "function" then pcall(f, msg) end
end

-- RFC 3986: everything but unreserved characters is percent-encoded, so "+"
-- (which Go decodes as a space), "&", "#", "%" and "," survive the trip.
local function local_urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function to.urlencode(s)
  local ts = rawget(_G, "tstats")
  local h = type(ts) == "table" and type(ts.http) == "table" and ts.http.urlencode
  if type(h) == "function" then return h(tostring(s)) end
  return local_urlencode(s)
end
to.local_urlencode = local_urlencode

-- Query string from a table (keys sorted, for stable URLs) or a ready string.
function to.query(q)
  if q == nil then return "" end
  if type(q) == "string" then return q end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if v == nil then v = q[tonumber(k)] end
    out[#out + 1] = to.urlencode(k) .. "=" .. to.urlencode(tostring(v))
  end
  return table.concat(out, "&")
end

local civil = require "tstats.civil"
local days_from_civil, civil_from_days = civil.days_from_civil, civil.civil_from_days

-- TO timestamps → integer ms since the epoch. Accepts RFC 3339 (API v5,
-- "2019-11-19T06:12:34+05:30", "…Z", fractional seconds) and the pre-v5
-- "2006-01-02 15:04:05-07" form. nil for anything else.
function to.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  local ms = 0
  local frac, tz = rest:match("^%.(%d+)(.*)$")
  if frac then
    ms = tonumber((frac .. "00"):sub(1, 3))
    rest = tz
  end
  local off
  if rest == "Z" or rest == "z" then
    off = 0
  else
    local sign, oh, om = rest:match("^([%+%-])(%d%d):?(%d%d)$")
    if not sign then sign, oh = rest:match("^([%+%-])(%d%d)$"); om = "00" end
    if not sign then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then off = -off end
  end
  local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off
  return secs * 1000 + ms
end

-- ms since the epoch → "YYYY-MM-DDTHH:MM:SSZ" (RFC 3339, UTC, no fraction,
-- which TO's summaryTime parser accepts).
function to.format_time(ms)
  local secs = ms // 1000
  local days, rem = secs // 86400, secs % 86400
  local y, m, d = civil_from_days(days)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d, rem // 3600, rem % 3600 // 60, rem % 60)
end

function to.format_date(ms)
  local y, m, d = civil_from_days((ms // 1000) // 86400)
  return string.format("%04d-%02d-%02d", y, m, d)
end

-- Human text of a TO error body: the alerts if it has any, else a short,
-- single-line excerpt (an HTML error page must not flood the log).
local function alert_text(body)
  if type(body) ~= "string" or body == "" then return "(empty body)" end
  local ok, doc = pcall(T().json.decode, body)
  if ok and type(doc) == "table" and type(doc.alerts) == "table" then
    local texts = {}
    for _, a in ipairs(doc.alerts) do
      if type(a) == "table" and type(a.text) == "string" then texts[#texts + 1] = a.text end
    end
    if #texts > 0 then return table.concat(texts, "; ") end
  end
  local s = body:sub(1, 200):gsub("[%c]+", " ")
  return s
end

local Client = {}
Client.__index = Client

-- opts: url (required), user, password, insecure=false, timeout=10 (s),
-- ca_file, ca_path, client_cert, client_key (TLS),
-- connect_timeout (s, default min(5, timeout)).
function to.new(opts)
  if type(opts) ~= "table" then error("to.new: options table expected", 2) end
  if type(opts.url) ~= "string" or not opts.url:match("^https?://[^/]") then
    error("to.new: url must be an http(s):// URL", 2)
  end
  local timeout = tonumber(opts.timeout)
  -- Same rule as Traffic Stats' toRequestTimeout: <= 0 means the default.
  if not timeout or timeout <= 0 then timeout = 10 end
  local ct = tonumber(opts.connect_timeout)
  if not ct or ct <= 0 then ct = math.min(5, timeout) end
  local self = setmetatable({
    url = opts.url:gsub("/+$", ""),
    user = opts.user or "",
    insecure = opts.insecure == true,
    ca_file = opts.ca_file, ca_path = opts.ca_path, client_cert = opts.client_cert, client_key = opts.client_key,
    timeout = timeout,
    connect_timeout = ct,
    logged_in = false,
    logins = 0,
  }, Client)
  -- Kept out of the visible fields so dumping the client never shows it.
  local password = opts.password or ""
  self._password = function() return password end
  return self
end

-- One HTTP exchange. cookies=true on every call: the jar holds the session.
function Client:_raw(method, path, body, records)
  local req = {
    url = self.url .. path,
    method = method,
    headers = { Accept = "application/json" },
    timeout = self.timeout,
    connect_timeout = self.connect_timeout,
    insecure = self.insecure,
    ca_file = self.ca_file, ca_path = self.ca_path, client_cert = self.client_cert, client_key = self.client_key,
    cookies = true,
    records = records,
  }
  if body ~= nil then
    req.body = body
    req.content_type = "application/json"
  end
  return T().http.request(req)
end

-- POST /user/login. Success = 200 and an alert of level "success" (the Go
-- client additionally demands the exact English text; we do not).
function Client:login()
  local path = API .. "/user/login"
  local ok, body = pcall(T().json.encode, { u = self.user, p = self._password() })
  if not ok then return nil, "TO login: cannot encode credentials" end
  local res, err = self:_raw("POST", path, body)
  self.logins = self.logins + 1
  if not res then
    self.logged_in = false
    return nil, "TO login " .. self.url .. ": " .. tostring(err)
  end
  if res.status ~= 200 then
    self.logged_in = false
    return nil, string.format("TO login %s as %s: HTTP %s: %s", self.url, self.user,
                              tostring(res.status), alert_text(res.body))
  end
  local dok, doc = pcall(T().json.decode, res.body or "")
  local success = false
  if dok and type(doc) == "table" and type(doc.alerts) == "table" then
    for _, a in ipairs(doc.alerts) do
      if type(a) == "table" and a.level == "success" then success = true end
    end
  end
  if not success then
    self.logged_in = false
    return nil, string.format("TO login %s as %s: HTTP 200 without a success alert: %s",
                              self.url, self.user, alert_text(res.body))
  end
  self.logged_in = true
  log("info", string.format("logged in to Traffic Ops %s as %s", self.url, self.user))
  return true
end

-- Authenticated call: logs in when there is no session yet, and re-logs in
-- exactly once when TO answers 401 (expired session), then retries once.
-- `records` (a list of field names) asks the C core to stream the answer
-- through tstats' records decoder: the result is then {response = records}.
function Client:call(method, path, payload, decode, records)
  local body
  if payload ~= nil then
    local ok, enc = pcall(T().json.encode, payload)
    if not ok then return nil, string.format("TO %s %s: cannot encode body: %s", method, path, tostring(enc)) end
    body = enc
  end
  if not self.logged_in then
    local ok, err = self:login()
    if not ok then return nil, err end
  end
  local res, err = self:_raw(method, path, body, records)
  if res and res.status == 401 then
    log("info", "Traffic Ops session expired (401 on " .. path .. "): logging in again")
    self.logged_in = false
    local ok, lerr = self:login()
    if not ok then return nil, lerr end
    res, err = self:_raw(method, path, body, records)
  end
  if not res then
    return nil, string.format("TO %s %s: %s", method, path, tostring(err))
  end
  if type(res.status) ~= "number" or res.status < 200 or res.status > 299 then
    if res.status == 401 then self.logged_in = false end
    return nil, string.format("TO %s %s: HTTP %s: %s", method, path, tostring(res.status), alert_text(res.body))
  end
  if records and res.records then return { response = res.records } end
  if records and res.records_error then
    return nil, string.format("TO %s %s: %s", method, path, res.records_error)
  end
  local ok, doc = pcall(decode or T().json.decode, res.body or "")
  if not ok then
    return nil, string.format("TO %s %s: invalid JSON: %s", method, path, tostring(doc))
  end
  return doc
end

function Client:get(path, decode)
  return self:call("GET", path, nil, decode)
end

function Client:post(path, payload)
  return self:call("POST", path, payload)
end

-- The "response" member of a GET, checked to be a table. With `fields`, only
-- those top-level fields of each record are decoded, and the C core streams
-- the answer through its records decoder as it arrives (a large CDN's servers
-- list is never held whole, nor becomes a full Lua tree). Without the C core
-- (specs) cjson decodes it all.
local function response(self, path, fields)
  local doc, err
  if fields and T().json and T().json.decode_records then
    doc, err = self:call("GET", path, nil, nil, fields)
  else
    doc, err = self:get(path)
  end
  if doc == nil then return nil, err end
  if type(doc) ~= "table" or type(doc.response) ~= "table" then
    return nil, "TO GET " .. path .. ": no \"response\" in the answer"
  end
  return doc.response
end

-- All servers (monitors and caches: the caches give the hostname → cache
-- group / type map the mappings need).
-- The fields of a server that lua/plan.lua and the mappings read.
to.SERVER_FIELDS = { "hostName", "domainName", "tcpPort", "cacheGroup", "type", "cdn", "status" }

function Client:servers()
  return response(self, API .. "/servers", to.SERVER_FIELDS)
end

-- Parameters of a profile by name (default TRAFFIC_STATS, as Traffic Stats).
function Client:parameters(profile)
  profile = profile or "TRAFFIC_STATS"
  return response(self, API .. "/profiles/name/" .. to.urlencode(profile) .. "/parameters")
end

-- Time of the newest stats_summary row of stat_name. Returns the TO string
-- and its epoch ms, or false when TO has no row yet; nil, err on failure.
function Client:last_summary(stat_name)
  local path = API .. "/stats_summary?lastSummaryDate=true&statName=" .. to.urlencode(stat_name)
  local r, err = response(self, path)
  if r == nil then return nil, err end
  local t = r.summaryTime
  if type(t) ~= "string" or t == "" then return false end
  local ms = to.parse_time(t)
  if not ms then return nil, "TO GET " .. path .. ": unparsable summaryTime " .. t end
  return t, ms
end

-- Rows of stats_summary; query is a table (statName=, cdnName=, ...) or a string.
function Client:summaries(query)
  local q = to.query(query)
  return response(self, API .. "/stats_summary" .. (q ~= "" and "?" .. q or ""))
end

local function pick(row, a, b)
  local v = row[a]
  if v == nil then v = row[b] end
  return v
end

-- The POST body exactly as Traffic Stats sends it (ATC.md 3.6). Accepts the
-- API's camelCase names or the table's column names; times may be strings
-- or integer ms (formatted in UTC).
function to.summary_body(row)
  if type(row) ~= "table" then return nil, "summary row must be a table" end
  local name = pick(row, "statName", "stat_name")
  local value = pick(row, "statValue", "stat_value")
  if type(name) ~= "string" or name == "" then return nil, "summary row: statName missing" end
  if type(value) ~= "number" or value ~= value or value == math.huge or value == -math.huge then
    return nil, "summary row " .. name .. ": statValue must be a finite number"
  end
  local st = pick(row, "summaryTime", "summary_time")
  if math.type(st) == "integer" then st = to.format_time(st) end
  if type(st) ~= "string" or st == "" then
    local ts = rawget(_G, "tstats")
    local now = (type(ts) == "table" and type(ts.now_ms) == "function") and ts.now_ms() or os.time() * 1000
    st = to.format_time(now)
  end
  local sd = pick(row, "statDate", "stat_date")
  if math.type(sd) == "integer" then sd = to.format_date(sd) end
  local cdn = pick(row, "cdnName", "cdn_name")
  local ds = pick(row, "deliveryServiceName", "deliveryservice_name")
  return {
    statDate = type(sd) == "string" and sd or nil,
    summaryTime = st,
    cdnName = (type(cdn) == "string" and cdn ~= "") and cdn or "all",
    deliveryServiceName = (type(ds) == "string" and ds ~= "") and ds or "all",
    statName = name,
    statValue = value,
  }
end

function Client:post_summary(row)
  local body, berr = to.summary_body(row)
  if not body then return nil, "TO POST stats_summary: " .. berr end
  local doc, err = self:post(API .. "/stats_summary", body)
  if doc == nil then return nil, err end
  return true
end

to.Client = Client
return to
