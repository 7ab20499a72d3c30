-- Runtime spec (issue "a command line an operator can trust", progress display): `tstats
-- rollup` and `tstats backfill-cq` run in a real pseudo-terminal (tmux) against a real
-- influxd; the screen is read back: log lines above one titled bar per phase, the bar
-- redrawn whole; off a terminal, plain titled lines.
local stack = require "spec.runtime.stack"

local tstats = stack.bin("tstats")
local sq = stack.quote
local DAY = 86400

local function have_tmux() return os.execute("command -v tmux >/dev/null 2>&1") == true end

describe("progress display #asan", function()
  if not have_tmux() then pending("tmux not installed"); return end
  local influx, tmp, cfg
  local sock = "tstats-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e6))

  setup(function()
    influx = stack.influxd_start()
    tmp = stack.tmpdir()
    cfg = tmp .. "/config.lua"
    stack.write_file(cfg, ([[return { traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { %q } },
      summary = { sinks = {} } }]]):format(influx.url))
    local rc, out = stack.run(tstats .. " --config " .. cfg .. " setup-influx", { timeout = 120 })
    assert(rc == 0, out)
    -- three closed days of 1-minute CDN bandwidth, and some raw data in the last hours
    local today = os.time() // DAY * DAY
    local lines = {}
    for d = 3, 1, -1 do
      for m = 0, 5 do lines[#lines + 1] = ("bandwidth.cdn.1min,cdn=cdn1 value=%d %d"):format(1000 * (m + 1), today - d * DAY + m * 60) end
    end
    stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "monthly")
    lines = {}
    for m = 1, 30 do lines[#lines + 1] = ("bandwidth,cdn=cdn1,hostname=e1 value=%d %d"):format(m, os.time() - m * 120) end
    stack.influx_write(influx.url, "cache_stats", table.concat(lines, "\n") .. "\n", "s", "daily")
  end)
  teardown(function() stack.cleanup_all() end)

  -- Runs cmd in a 160x50 tmux pane, waits for it to end, returns the screen's lines.
  local runs = 0
  local function on_terminal(cmd)
    runs = runs + 1
    local sock = sock .. "-" .. runs   -- a server of its own per run: no race with the last one's exit
    local done = tmp .. "/done-" .. tostring(math.random(1e9))
    local script = tmp .. "/run-" .. tostring(math.random(1e9)) .. ".sh"
    stack.write_file(script, cmd .. "\necho \"rc=$?\" > " .. sq(done) .. "\nsleep 60\n")
    assert(os.execute(("tmux -L %s new-session -d -x 160 -y 50 sh %s"):format(sock, sq(script))) == true)
    assert(stack.wait_until(function() return stack.read_file(done) ~= nil end, 120, 0.2), "command did not finish")
    local p = io.popen(("tmux -L %s capture-pane -p -S -200"):format(sock))
    local screen = p:read("a")
    p:close()
    os.execute("tmux -L " .. sock .. " kill-server >/dev/null 2>&1")
    local out = {}
    for l in screen:gmatch("([^\n]*)\n") do out[#out + 1] = l end
    return out, stack.read_file(done)
  end

  it("rollup: log lines above one titled bar, redrawn whole, left as one finished line", function()
    local from, to = os.date("!%Y-%m-%d", os.time() - 3 * DAY), os.date("!%Y-%m-%d", os.time() - DAY - 700)
    local screen = on_terminal(tstats .. " --config " .. cfg .. " rollup --from " .. from .. " --to " .. to)
    local bars, logs = {}, 0
    for _, l in ipairs(screen) do
      if l:find("%[#*%.*%]") then bars[#bars + 1] = l end
      if l:find(" INFO ") then
        logs = logs + 1
        assert.falsy(l:find("[#", 1, true), "a log line inside the bar: " .. l)
        assert.truthy(l:match("^%d%d%d%d%-%d%d%-%d%dT"), "a log line that does not start the line: " .. l)
      end
    end
    assert.is_true(logs >= 3, table.concat(screen, "\n"))
    assert.are.equal(1, #bars, table.concat(screen, "\n"))
    assert.truthy(bars[1]:match("^daily rollups %[#+%] 3/3 " .. to:gsub("%-", "%%-") .. "%s*$"), bars[1])
  end)

  it("backfill-cq: one titled bar per phase", function()
    local from = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 5 * 3600)
    local to = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 3600)
    local screen, rc = on_terminal(tstats .. " --config " .. cfg .. " backfill-cq --chunk 2 --from " .. from .. " --to " .. to)
    assert.truthy(rc:find("rc=0", 1, true), rc .. table.concat(screen, "\n"))
    local cq, ro = {}, {}
    for _, l in ipairs(screen) do
      if l:find("^continuous queries %[") then cq[#cq + 1] = l end
      if l:find("^daily rollups %[") then ro[#ro + 1] = l end
      assert.falsy(l:find("%].*%[#"), "two bars on one line: " .. l)
    end
    assert.are.equal(1, #cq, table.concat(screen, "\n"))
    assert.truthy(cq[1]:match("^continuous queries %[#+%] (%d+)/%1 "), cq[1])
    assert.is_true(#ro <= 1, table.concat(screen, "\n"))
  end)

  it("off a terminal: plain titled lines", function()
    local from = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 5 * 3600)
    local to = os.date("!%Y-%m-%dT%H:00:00Z", os.time() - 3600)
    local rc, _, err = stack.run(tstats .. " --config " .. cfg .. " backfill-cq --no-rollup --from " .. from .. " --to " .. to, { timeout = 120 })
    assert.are.equal(0, rc, err)
    assert.falsy(err:find("\r", 1, true), "carriage returns off a terminal")
    assert.falsy(err:find("\27[", 1, true), "escape sequences off a terminal")
    assert.truthy(err:find("\ncontinuous queries 1/%d+ ") or err:find("^continuous queries 1/%d+ "), err)
    assert.falsy(err:find("rollup %d+/%d+"), "CQ steps labelled as rollups: " .. err)
  end)
end)
