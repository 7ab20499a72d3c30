-- Specs for lua/to.lua (pure Lua): a stand-in `tstats` global whose
-- http.request plays Traffic Ops from the v5 fixtures, with a session cookie
-- jar, expiry, outages and error answers; every request is recorded.
local cjson = require "cjson"

local FIX = "spec/fixtures/"
local helpers = require "spec.lua.helpers"
local URL = "https://to.example.net"
local USER, PASS = "admin", "twelve-S3cr3t!"

local read = helpers.read

local function api_params()
  local prof = cjson.decode(read("to/ciab_profile_TRAFFIC_STATS.json"))
  local out = {}
  for i, p in ipairs(prof.params) do
    out[i] = { configFile = p.configFile, id = i, name = p.name, profiles = { prof.name }, secure = false, value = p.value }
  end
  return cjson.encode({ response = out })
end

-- A fake Traffic Ops. `jar` stands for the C core's shared cookie jar: the
-- login sets a session there, and only requests made with cookies=true
-- present it. Tests flip `down`, `expire`, `routes` to script failures.
local function fake_to()
  local fx = {
    calls = {}, logins = 0, posted = {}, logs = {},
    jar = nil, session = 0, valid = {}, down = false,
    routes = {},
  }
  local function reply(status, body) return { status = status, body = body } end
  local function route(req)
    local path = req.url:sub(#URL + 1)
    if fx.routes[path] then return fx.routes[path](req) end
    if req.method == "POST" and path == "/api/5.0/user/login" then
      local b = cjson.decode(req.body)
      if b.u == USER and b.p == PASS then
        fx.logins = fx.logins + 1
        fx.session = fx.session + 1
        fx.valid[fx.session] = true
        if req.cookies then fx.jar = fx.session end
        return reply(200, read("to/to_v5_user_login_POST_response.json"))
      end
      return reply(401, '{"alerts":[{"text":"Invalid username or password.","level":"error"}]}')
    end
    -- everything else needs the session cookie
    if not (req.cookies and fx.jar and fx.valid[fx.jar]) then
      return reply(401, '{"alerts":[{"text":"Unauthorized, please log in.","level":"error"}]}')
    end
    if req.method == "GET" and path == "/api/5.0/servers" then
      return reply(200, read("to/to_v5_servers_GET_response.json"))
    elseif req.method == "GET" and path == "/api/5.0/profiles/name/TRAFFIC_STATS/parameters" then
      return reply(200, api_params())
    elseif req.method == "GET" and path == "/api/5.0/stats_summary?lastSummaryDate=true&statName=daily_maxgbps" then
      return reply(200, read("to/to_v5_stats_summary_lastSummaryDate_response.json"))
    elseif req.method == "GET" and path == "/api/5.0/stats_summary?lastSummaryDate=true&statName=daily_bytesserved" then
      return reply(200, '{"response":{"summaryTime":null}}')
    elseif req.method == "GET" and path:match("^/api/5%.0/stats_summary") then
      return reply(200, read("to/to_v5_stats_summary_GET_response.json"))
    elseif req.method == "POST" and path == "/api/5.0/stats_summary" then
      fx.posted[#fx.posted + 1] = cjson.decode(req.body)
      return reply(200, read("to/to_v5_stats_summary_POST_response.json"))
    end
    return reply(404, '{"alerts":[{"text":"Resource not found.","level":"error"}]}')
  end
  local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
  end
  fx.tstats = {
    json = cjson,
    http = {
      request = function(req)
        fx.calls[#fx.calls + 1] = copy(req)
        if fx.down then return nil, "Couldn't connect to server" end
        return route(req)
      end,
    },
    now_ms = function() return 1589414460000 end,
  }
  for _, lvl in ipairs({ "error", "warn", "info", "debug" }) do
    fx.tstats[lvl] = function(msg) fx.logs[#fx.logs + 1] = lvl .. ": " .. msg end
  end
  fx.tstats.log = function(lvl, msg) fx.logs[#fx.logs + 1] = tostring(lvl) .. ": " .. msg end
  fx.expire = function() fx.valid[fx.session] = false end
  fx.paths = function()
    local t = {}
    for _, c in ipairs(fx.calls) do t[#t + 1] = c.method .. " " .. c.url:sub(#URL + 1) end
    return t
  end
  return fx
end

describe("to", function()
  local to, fx, saved

  before_each(function()
    saved = rawget(_G, "tstats")
    fx = fake_to()
    _G.tstats = fx.tstats
    package.loaded.to = nil
    to = require "to"
  end)
  after_each(function()
    -- the password must never reach a log line
    for _, l in ipairs(fx.logs) do assert.is_nil(l:find(PASS, 1, true), l) end
    _G.tstats = saved
  end)

  local function client(extra)
    local o = { url = URL .. "/", user = USER, password = PASS, insecure = false, timeout = 7 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return to.new(o)
  end

  it("logs in once with {u,p} and reuses the session for many GETs", function()
    local c = client()
    for _ = 1, 10 do
      local s = assert(c:servers())
      assert.are.equal("mid", s[1].hostName)
      local p = assert(c:parameters())
      assert.are.equal(45, #p)
    end
    assert.are.equal(1, fx.logins)
    assert.are.equal(21, #fx.calls)
    local login = fx.calls[1]
    assert.are.equal("POST", login.method)
    assert.are.equal(URL .. "/api/5.0/user/login", login.url)
    assert.are.same(cjson.decode(read("to/to_v5_user_login_POST_request.json")).u, cjson.decode(login.body).u)
    assert.are.same({ u = USER, p = PASS }, cjson.decode(login.body))
    assert.are.equal("application/json", login.content_type)
    for _, call in ipairs(fx.calls) do
      assert.is_true(call.cookies)
      assert.are.equal(7, call.timeout)
      assert.is_true(call.connect_timeout > 0 and call.connect_timeout <= 7)
      assert.is_false(call.insecure)
      assert.is_nil(call.user) -- no basic auth: the session cookie is the credential
      assert.is_nil(call.password)
    end
  end)

  it("logs in again exactly once when the session expires (401), then retries", function()
    local c = client()
    assert(c:servers())
    fx.expire()
    local s = assert(c:servers())
    assert.are.equal("mid", s[1].hostName)
    assert.are.equal(2, fx.logins)
    assert.are.same({ "POST /api/5.0/user/login", "GET /api/5.0/servers", "GET /api/5.0/servers",
                      "POST /api/5.0/user/login", "GET /api/5.0/servers" }, fx.paths())
    assert(c:servers())
    assert.are.equal(2, fx.logins)
  end)

  it("gives up after one re-login when TO keeps answering 401", function()
    fx.routes["/api/5.0/servers"] = function() return { status = 401, body = '{"alerts":[{"text":"nope","level":"error"}]}' } end
    local c = client()
    local r, err = c:servers()
    assert.is_nil(r)
    assert.are.equal("TO GET /api/5.0/servers: HTTP 401: nope", err)
    assert.are.equal(2, fx.logins)
    assert.are.equal(4, #fx.calls)
  end)

  it("re-logs in on 401 for POSTs too", function()
    local c = client()
    assert(c:servers())
    fx.expire()
    assert.is_true(c:post_summary({ cdnName = "CDN-in-a-Box", statName = "daily_maxgbps", statValue = 1.5 }))
    assert.are.equal(2, fx.logins)
    assert.are.equal(1, #fx.posted)
  end)

  it("reports a wrong password without a GET and without the password", function()
    local c = client({ password = "wrong-" .. PASS })
    local r, err = c:servers()
    assert.is_nil(r)
    assert.is_truthy(err:find("HTTP 401: Invalid username or password.", 1, true), err)
    assert.is_nil(err:find(PASS, 1, true))
    assert.are.same({ "POST /api/5.0/user/login" }, fx.paths())
    assert.is_false(c.logged_in)
  end)

  it("requires a success alert on login", function()
    fx.routes["/api/5.0/user/login"] = function()
      return { status = 200, body = '{"alerts":[{"text":"Welcome?","level":"info"}]}' }
    end
    local ok, err = client():login()
    assert.is_nil(ok)
    assert.is_truthy(err:find("without a success alert: Welcome?", 1, true), err)
    fx.routes["/api/5.0/user/login"] = function() return { status = 200, body = "<html>" } end
    assert.is_nil((client():login()))
  end)

  it("returns nil, err while TO is down and recovers when it is back", function()
    local c = client()
    fx.down = true
    local r, err = c:servers()
    assert.is_nil(r)
    assert.is_truthy(err:find("Couldn't connect to server", 1, true), err)
    local r2, err2 = c:last_summary("daily_maxgbps")
    assert.is_nil(r2)
    assert.is_string(err2)
    assert.are.equal(2, #fx.calls) -- one login attempt per call, no loop
    fx.down = false
    assert(c:servers())
    assert.are.equal(1, fx.logins)
    -- down after login: the GET itself fails, the session is kept
    fx.down = true
    r, err = c:parameters()
    assert.is_nil(r)
    assert.are.equal("TO GET /api/5.0/profiles/name/TRAFFIC_STATS/parameters: Couldn't connect to server", err)
    fx.down = false
    assert(c:parameters())
    assert.are.equal(1, fx.logins)
  end)

  it("turns non-2xx answers into 'TO GET <path>: HTTP <status>: <alert text>'", function()
    local c = client()
    local r, err = c:get("/api/5.0/nothing")
    assert.is_nil(r)
    assert.are.equal("TO GET /api/5.0/nothing: HTTP 404: Resource not found.", err)
    fx.routes["/api/5.0/boom"] = function()
      return { status = 502, body = "<html>\n<body>Bad Gateway</body>\n</html>" .. string.rep("x", 5000) }
    end
    r, err = c:get("/api/5.0/boom")
    assert.is_nil(r)
    assert.is_truthy(err:find("^TO GET /api/5.0/boom: HTTP 502: <html> <body>Bad Gateway"), err)
    assert.is_nil(err:find("\n", 1, true))
    assert.is_true(#err < 300)
    fx.routes["/api/5.0/multi"] = function()
      return { status = 400, body = '{"alerts":[{"text":"a bad","level":"error"},{"text":"b bad","level":"error"}]}' }
    end
    assert.are.equal("TO GET /api/5.0/multi: HTTP 400: a bad; b bad", select(2, c:get("/api/5.0/multi")))
  end)

  it("rejects invalid JSON and answers without a response member", function()
    local c = client()
    fx.routes["/api/5.0/servers"] = function() return { status = 200, body = '{"response":[{"hostName":' } end
    local r, err = c:servers()
    assert.is_nil(r)
    assert.is_truthy(err:find("invalid JSON", 1, true), err)
    fx.routes["/api/5.0/servers"] = function() return { status = 200, body = '{"alerts":[]}' } end
    r, err = c:servers()
    assert.is_nil(r)
    assert.is_truthy(err:find("no \"response\"", 1, true), err)
  end)

  it("URL-encodes the profile name in the path", function()
    local c = client()
    fx.routes["/api/5.0/profiles/name/TS%20PROF%2B1%2F2/parameters"] = function()
      return { status = 200, body = '{"response":[]}' }
    end
    assert.are.same({}, c:parameters("TS PROF+1/2"))
  end)

  it("reads the last summary time as text and epoch ms; null means none yet", function()
    local c = client()
    local t, ms = c:last_summary("daily_maxgbps")
    assert.are.equal("2019-11-19T06:12:34+05:30", t)
    assert.are.equal(1574124154000, ms) -- date -u -d '2019-11-19T06:12:34+05:30' +%s
    local none, err = c:last_summary("daily_bytesserved")
    assert.is_false(none)
    assert.is_nil(err)
  end)

  it("lists summaries with an encoded, sorted query", function()
    local c = client()
    local rows = assert(c:summaries({ statName = "daily_maxgbps", cdnName = "CDN in a Box" }))
    assert.are.equal(3, #rows)
    assert.are.equal(URL .. "/api/5.0/stats_summary?cdnName=CDN%20in%20a%20Box&statName=daily_maxgbps", fx.calls[2].url)
    assert(c:summaries())
    assert.are.equal(URL .. "/api/5.0/stats_summary", fx.calls[3].url)
  end)

  it("POSTs the stats_summary body exactly as Traffic Stats does", function()
    local c = client()
    assert.is_true(c:post_summary({
      cdnName = "CDN-in-a-Box", statName = "daily_maxgbps", statValue = 12.345678,
      summaryTime = 1589414460000,            -- 2020-05-14T00:01:00Z
      statDate = 1589371200000,               -- 2020-05-13T12:00:00Z
    }))
    local want = cjson.decode(read("synthesized/to_v5_stats_summary_POST_body_as_sent_by_traffic_stats.json"))
    assert.are.same(want, fx.posted[1])
    -- column names and strings work too; missing cdn/ds become "all"
    assert.is_true(c:post_summary({ stat_name = "daily_bytesserved", stat_value = 3,
                                    summary_time = "2020-05-14T00:01:00Z", stat_date = "2020-05-13" }))
    assert.are.same({ statName = "daily_bytesserved", statValue = 3, cdnName = "all", deliveryServiceName = "all",
                      summaryTime = "2020-05-14T00:01:00Z", statDate = "2020-05-13" }, fx.posted[2])
    -- no summaryTime: now (tstats.now_ms)
    assert.is_true(c:post_summary({ statName = "x", statValue = 0 }))
    assert.are.equal("2020-05-14T00:01:00Z", fx.posted[3].summaryTime)
    assert.is_nil(fx.posted[3].statDate)
  end)

  it("refuses summary rows TO would reject, before any request", function()
    local c = client()
    for _, row in ipairs({ { statName = "x", statValue = 0 / 0 }, { statName = "x", statValue = math.huge },
                           { statName = "x", statValue = "1" }, { statValue = 1 }, "row" }) do
      local ok, err = c:post_summary(row)
      assert.is_nil(ok)
      assert.is_truthy(err:find("^TO POST stats_summary: "), err)
    end
    assert.are.equal(0, #fx.calls)
  end)

  it("uses the configured timeout, defaulting like toRequestTimeout", function()
    assert.are.equal(10, client({ timeout = 0 }).timeout)
    assert.are.equal(10, client({ timeout = -3 }).timeout)
    assert.are.equal(10, client({ timeout = "x" }).timeout)
    local c = client({ timeout = 30, insecure = true })
    assert(c:servers())
    assert.are.equal(30, fx.calls[2].timeout)
    assert.are.equal(5, fx.calls[2].connect_timeout)
    assert.is_true(fx.calls[2].insecure)
  end)

  it("keeps the password out of the client's fields", function()
    local c = client()
    for k, v in pairs(c) do
      assert.is_false(v == PASS, k)
    end
    assert.are.equal(URL, c.url)
  end)

  it("rejects bad options loudly", function()
    assert.has_error(function() to.new() end)
    assert.has_error(function() to.new({ user = "a" }) end)
    assert.has_error(function() to.new({ url = "ftp://x" }) end)
  end)

  it("parses and formats TO timestamps without the local time zone", function()
    local cases = {
      ["2019-11-19T06:12:34+05:30"] = 1574124154000,
      ["2020-05-14T00:01:00Z"] = 1589414460000,
      ["2020-05-14T00:01:00.123456Z"] = 1589414460123,
      ["2019-11-19 06:12:34-07"] = 1574169154000,       -- API < 5 form
      ["1969-12-31T23:59:59Z"] = -1000,
      ["2000-02-29T12:00:00Z"] = 951825600000,
      ["2100-03-01T00:00:00+0000"] = 4107542400000,
    }
    for s, ms in pairs(cases) do assert.are.equal(ms, to.parse_time(s), s) end
    for _, bad in ipairs({ "", "2019-11-19", "2019-13-01T00:00:00Z", "2019-11-19T06:12:34", "yesterday", 5 }) do
      assert.is_nil(to.parse_time(bad), tostring(bad))
    end
    assert.are.equal("2020-05-14T00:01:00Z", to.format_time(1589414460000))
    assert.are.equal("1969-12-31T23:59:59Z", to.format_time(-1000))
    assert.are.equal("2000-02-29", to.format_date(951825600000))
    for _, ms in ipairs({ 0, 951825600000, 4107542400000, 1589414460000 }) do
      assert.are.equal(ms, to.parse_time(to.format_time(ms)))
    end
  end)

  it("encodes like RFC 3986 without the C core and prefers tstats.http.urlencode", function()
    assert.are.equal("a%2Bb%2Cc%20d~e", to.local_urlencode("a+b,c d~e"))
    assert.are.equal("a%2Bb", to.urlencode("a+b"))
    fx.tstats.http.urlencode = function(s) return "[" .. s .. "]" end
    assert.are.equal("[a+b]", to.urlencode("a+b"))
  end)
end)
