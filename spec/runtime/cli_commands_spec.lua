-- Runtime spec (issue "a command line an operator can trust"): the real tstats binary's
-- argument parsing (one command table), help that never runs anything, usage errors,
-- man pages and README from the same source, --log-level/--log-format, `poll` never
-- writing, `check` catching what fails later (and --connect), masked secrets, and the
-- exit codes of `once`, against the simulator, a real influxd and a real PostgreSQL.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"

local tstats = stack.bin("tstats")
local function sq(s) return stack.quote(s) end

local tmp
local function file(body, name)
  local path = tmp .. "/" .. (name or ("f-" .. tostring(math.random(1e9)) .. ".lua"))
  stack.write_file(path, body)
  return path
end

local function start_sim(args) return stack.sim_start(args) end

-- A config for the simulator and influxd; extra is Lua table fields.
local function sim_config(to_url, influx_url, extra, password)
  return file(stack.config({ to_url = to_url, to_password = password, influx_url = influx_url,
    state_dir = tmp .. "/state-" .. tostring(math.random(1e9)), extra = extra }))
end

local function commands()
  local rc, out = stack.run(tstats .. " help --markdown")
  assert(rc == 0)
  local list = {}
  for usage in out:gmatch("\n| `tstats ([^`]+)` |") do
    local name = usage:match("^(%S+)")
    local opts = {}
    for o in usage:gmatch("%-%-([%w-]+)") do opts[#opts + 1] = o end
    list[#list + 1] = { name = name, options = opts }
  end
  return list
end

describe("tstats command table #asan", function()
  local influx
  setup(function()
    tmp = stack.tmpdir()
    influx = stack.influxd_start()
  end)
  teardown(function() stack.cleanup_all() end)

  it("lists every command; `help CMD`, `CMD --help` and `CMD -h` print that command's help and nothing runs", function()
    local list = commands()
    assert.is_true(#list >= 12, #list)
    -- a config whose servers are dead: anything that ran would hang or fail, not exit 0 quickly
    local cfg = file([[return { traffic_ops = { url = "http://127.0.0.1:1" }, influxdb = { urls = { "http://127.0.0.1:1" } },
      state_dir = "]] .. tmp .. [[/never-created", summary = { enabled = false } }]])
    for _, c in ipairs(list) do
      for _, form in ipairs({ "help " .. c.name, c.name .. " --help", c.name .. " -h", "--config " .. cfg .. " " .. c.name .. " --help" }) do
        local rc, out, err = stack.run(tstats .. " " .. form, { timeout = 10 })
        assert.are.equal(0, rc, form .. ": " .. err)
        assert.truthy(out:find("usage: tstats " .. c.name, 1, true), form .. ": " .. out)
        assert.are.equal("", err, form)
        for _, o in ipairs(c.options) do
          assert.truthy(out:find("--" .. o, 1, true), form .. " documents --" .. o)
        end
        if c.name ~= "version" then assert.truthy(out:find("exit status:", 1, true), form) end
      end
    end
    assert.is_nil(io.open(tmp .. "/never-created", "r"), "a --help created the state dir")
    local rc, out = stack.run(tstats .. " help")
    assert.are.equal(0, rc)
    for _, c in ipairs(list) do assert.truthy(out:find("\n  " .. c.name .. " ", 1, true), c.name) end
    rc, out = stack.run(tstats .. " version")
    assert.are.equal(0, rc)
    assert.truthy(out:match("^tstats %d+%.%d+%.%d+"), out)
    -- backfill-cq's options are documented
    rc, out = stack.run(tstats .. " backfill-cq --help")
    assert.truthy(out:find("--chunk HOURS", 1, true) and out:find("--no-rollup", 1, true), out)
  end)

  it("refuses unknown options, stray arguments and bad values with exit 2 and a one-line usage", function()
    local cases = {
      { "check --bogus", "unknown option '--bogus'" },
      { "once --bogus", "unknown option '--bogus'" },
      { "run --dryrun", "unknown option '--dryrun'" },
      { "poll --dryrun", "unknown option '--dryrun'" },
      { "run extra", "unexpected argument 'extra'" },
      { "options extra", "unexpected argument 'extra'" },
      { "--config", "--config needs a value" },
      { "check --config", "--config needs a value" },
      { "--log-level loud check", "--log-level must be one of" },
      { "--log-format xml check", "--log-format must be one of" },
      { "setup-influx --replication abc", "--replication must be an integer, got 'abc'" },
      { "setup-influx --replication 1.5", "--replication must be an integer, got '1.5'" },
      { "setup-influx --replication 0", "--replication must be at least 1" },
      { "setup-influx --replication -1", "--replication must be at least 1" },
      { "rollup --from 2026/11/01 --to 2026-11-02", "'2026/11/01' is not a date" },
      { "rollup --from 2026-11-31 --to 2026-12-01", "'2026-11-31' is not a date" },
      { "rollup --to 2026-12-01", "--from is required" },
      { "backfill-cq --from 2026-02-30 --to 2026-03-01", "'2026-02-30' is not a date" },
      { "nosuch", "unknown command 'nosuch'" },
      { "help nosuch", "unknown command 'nosuch'" },
      { "", "no command given" },
    }
    for _, c in ipairs(cases) do
      local rc, out, err = stack.run(tstats .. " " .. c[1], { timeout = 10 })
      assert.are.equal(2, rc, c[1] .. ": " .. err)
      assert.truthy(err:find(c[2], 1, true), c[1] .. ": " .. err)
      assert.truthy(err:find("\nusage: tstats", 1, true), c[1] .. ": " .. err)
      local lines = select(2, err:gsub("\n", "\n"))
      assert.are.equal(2, lines, c[1] .. ": message + one usage line: " .. err)
      assert.are.equal("", out, c[1])
    end
  end)

  it("generates man pages from the same table, installed by cmake --install", function()
    local man1 = stack.read_file(stack.bin("man/tstats.1"))
    local man5 = stack.read_file(stack.bin("man/tstats.conf.5"))
    assert.truthy(man1 and man1:find("^%.TH TSTATS 1"), "build/man/tstats.1")
    assert.truthy(man5 and man5:find("^%.TH TSTATS.CONF 5"), "build/man/tstats.conf.5")
    local _, m1 = stack.run(tstats .. " help --man 1")
    assert.are.equal(m1, man1)
    for _, c in ipairs(commands()) do
      assert.truthy(man1:find(".SS tstats " .. (c.name:gsub("%-", "\\-")), 1, true), c.name)
      for _, o in ipairs(c.options) do assert.truthy(man1:find("\\-\\-" .. (o:gsub("%-", "\\-")), 1, true), c.name .. " --" .. o) end
    end
    local _, opts = stack.run(tstats .. " options")
    for key in ("\n" .. opts):gmatch("\n| `([%w_.]+)` |") do assert.truthy(man5:find("\\fB" .. key .. "\\fR", 1, true), key) end
    local rc, out = stack.run("man --warnings -l " .. sq(stack.bin("man/tstats.1")) .. " 2>&1 >/dev/null", { env = { MANWIDTH = "80" } })
    assert.are.equal(0, rc)
    assert.are.equal("", out, "groff warnings")
    local dest = stack.tmpdir()
    rc, out = stack.run("cmake --install " .. sq(stack.bin("")) .. " --prefix " .. sq(dest .. "/usr"))
    assert.are.equal(0, rc, out)
    assert.are.equal(man1, stack.read_file(dest .. "/usr/share/man/man1/tstats.1"))
    assert.are.equal(man5, stack.read_file(dest .. "/usr/share/man/man5/tstats.conf.5"))
  end)

  it("README's command and configuration tables are the generated ones (with a header row)", function()
    local readme = stack.read_file(stack.root() .. "/README.md")
    local _, cmds = stack.run(tstats .. " help --markdown")
    local _, opts = stack.run(tstats .. " options")
    assert.truthy(opts:find("^| key | type | default | meaning |\n|---|"), opts)
    assert.truthy(readme:find("\n" .. cmds, 1, true), "README's Run table differs from `tstats help --markdown`")
    assert.truthy(readme:find("\n" .. opts, 1, true), "README's configuration table differs from `tstats options`")
  end)

  it("--log-level and --log-format override a --config's log settings", function()
    local cfg = file([[return { log = { level = "info" }, traffic_ops = { url = "http://127.0.0.1:1" },
      influxdb = { urls = { "http://127.0.0.1:1" } }, summary = { enabled = false } }]])
    local script = file([[tstats.info("an info line"); tstats.warn("a \"warn\" line"); tstats.error("an error line")]])
    local rc, _, err = stack.run(tstats .. " --config " .. cfg .. " --log-level error script " .. script)
    assert.are.equal(0, rc, err)
    assert.falsy(err:find("an info line", 1, true), err)
    assert.falsy(err:find("warn", 1, true), err)
    assert.truthy(err:find("an error line", 1, true), err)
    -- after the command too, and the daemon modes honour it (poll against a dead TO logs INFO otherwise)
    rc, _, err = stack.run(tstats .. " poll --config " .. cfg .. " --log-level error", { timeout = 30 })
    assert.are.equal(1, rc)
    assert.falsy(err:find(" INFO ", 1, true), err)
    assert.falsy(err:find(" WARN ", 1, true), err)
    rc, _, err = stack.run(tstats .. " --config " .. cfg .. " --log-format json script " .. script)
    assert.are.equal(0, rc, err)
    local n = 0
    for line in err:gmatch("[^\n]+") do
      local doc = cjson.decode(line)
      assert.truthy(doc.time and doc.level and doc.msg, line)
      n = n + 1
      if doc.level == "warn" then assert.truthy(doc.msg:find('a "warn" line', 1, true), doc.msg) end
    end
    assert.are.equal(3, n)
    rc, _, err = stack.run(tstats .. " --config " .. cfg .. " --log-format logfmt script " .. script)
    assert.truthy(err:find('level=warn msg="[^"]*a \\"warn\\" line"'), err)
    assert.truthy(err:find("^time=%S+ level=info msg="), err)
    -- the daemon modes too
    rc, _, err = stack.run(tstats .. " poll --config " .. cfg .. " --log-format json", { timeout = 30 })
    assert.are.equal(1, rc)
    n = 0
    for line in err:gmatch("[^\n]+") do
      local doc = cjson.decode(line)
      assert.truthy(doc.level and doc.msg, line)
      n = n + 1
    end
    assert.is_true(n >= 2, err)
    -- log.format in the configuration works as well
    local cfg2 = file([[return { log = { format = "json" }, traffic_ops = { url = "http://127.0.0.1:1" },
      influxdb = { urls = { "http://127.0.0.1:1" } }, summary = { enabled = false } }]])
    rc, _, err = stack.run(tstats .. " --config " .. cfg2 .. " script " .. script)
    assert.truthy(err:find('^{"time":'), err)
  end)

  it("`poll` prints and never writes; `once --dry-run` means it too", function()
    local sim = start_sim("--cdns 1 --caches 2 --ds 1 --payload-cache-ms 0")
    stack.run(tstats .. " setup-influx", { env = { TSTATS_INFLUX_URL = influx.url } })
    local cfg = sim_config(sim.to_url, influx.url)
    for _, form in ipairs({ "poll", "poll --dry-run", "once --dry-run" }) do
      local rc, out, err = stack.run(tstats .. " --config " .. cfg .. " " .. form, { timeout = 60 })
      assert.are.equal(0, rc, form .. ": " .. err)
      assert.truthy(out:find("# POST /write?db=cache_stats", 1, true), form .. ": " .. out)
    end
    local r = stack.influx_query(influx.url, "SHOW SERIES", "cache_stats")
    assert.is_nil(r.results[1].series, "poll wrote to InfluxDB")
    local rc, _, err = stack.run(tstats .. " --config " .. cfg .. " once", { timeout = 60 })
    assert.are.equal(0, rc, err)
    r = stack.influx_query(influx.url, "SHOW SERIES", "cache_stats")
    assert.truthy(r.results[1].series, "once wrote nothing")
    sim:kill()
  end)

  it("check refuses what would fail at run time, naming file and key; run/once refuse the same", function()
    local base = [[traffic_ops = { url = "http://to.example" }, influxdb = { urls = { "http://influx.example:8086" } }]]
    local cases = {
      { "summary = { sinks = { \"kafka\" } }", "'summary.sinks[1]' 'kafka' is not a summary sink: pg or api" },
      { "summary = { sinks = {}, rollups = { \"nosuch\" } }", "'summary.rollups[1]' 'nosuch' is not a rollup module (available: daily, ds_daily_max)" },
      { "summary = { sinks = { \"pg\" } }", "'postgres.conninfo' is required by summary.sinks" },
      { "summary = { enabled = false }, endpoints = { { name = \"CrStates\", path = \"/publish/CrStates\", mapping = \"mappings.crstates\", db = \"x\", fromat = \"lua\" } }",
        "'endpoints[1].fromat' is not a known endpoint field (did you mean 'format'?)" },
      { "summary = { enabled = false }, endpoints = { { name = \"X\", path = \"/x\", db = \"d\", mapping = \"mappings.nosuch\" } }",
        "'endpoints[1].mapping' module 'mappings.nosuch' not found" },
      { "summary = { enabled = false }, endpoints = { { name = \"X\", path = \"/x\", db = \"d\", mapping = \"mappings.crstates\", format = \"json\", precision = \"us\" } }",
        "'endpoints[1].format' 'json' is not a format" },
      { "summary = { enabled = false }, endpoints = { { name = \"X\", path = \"x\", mapping = \"mappings.crstates\" } }",
        "'endpoints[1].db' is required" },
      { "summary = { enabled = false }, endpoints = { { name = \"CacheStats\", path = \"/x\", db = \"d\", mapping = \"mappings.crstates\" } }",
        "'endpoints[1].name' 'CacheStats' is already used by the stock CacheStats endpoint" },
    }
    for _, c in ipairs(cases) do
      local path = file("return { " .. base .. ", " .. c[1] .. " }")
      local rc, out, err = stack.run(tstats .. " check --config " .. path)
      assert.are.equal(2, rc, c[1])
      assert.truthy(err:find(path .. ": " .. c[2], 1, true), c[1] .. "\n" .. err)
      assert.falsy(out:find("is valid", 1, true))
    end
    local path = file([[return { traffic_ops = { url = "127.0.0.1:44665" }, influxdb = { urls = { "influx:8086" } }, summary = { enabled = false } }]])
    local rc, _, err = stack.run(tstats .. " check --config " .. path)
    assert.are.equal(2, rc)
    assert.truthy(err:find("'traffic_ops.url' '127.0.0.1:44665' is not a URL: it needs http:// or https://", 1, true), err)
    assert.truthy(err:find("'influxdb.urls[1]' 'influx:8086' is not a URL", 1, true), err)
    rc, _, err = stack.run(tstats .. " once --config " .. path, { timeout = 20 })
    assert.are.equal(2, rc)
    assert.truthy(err:find("'traffic_ops.url' '127.0.0.1:44665' is not a URL", 1, true), err)
    assert.falsy(err:find("daemon.lua", 1, true), err)
    -- a mapping in script_dir counts as existing
    local dir = stack.tmpdir()
    os.execute("mkdir -p " .. sq(dir .. "/mappings") .. " " .. sq(dir .. "/rollups"))
    stack.write_file(dir .. "/mappings/mine.lua", "return { payload = function() return {} end }")
    stack.write_file(dir .. "/rollups/weekly.lua", "return { stats = { 'x' }, compute = function() return {} end }")
    path = file(("return { %s, script_dir = %q, summary = { sinks = {}, rollups = { 'daily', 'weekly' } }, endpoints = { { name = 'M', path = '/m', db = 'd', mapping = 'mappings.mine' } } }"):format(base, dir))
    rc, _, err = stack.run(tstats .. " check --config " .. path)
    assert.are.equal(0, rc, err)
  end)

  it("masks secrets whatever their value", function()
    local secrets = { "mypassword1", "p@ss:word", "a:b@c", "password=hunter2", "s3cret" }
    for _, s in ipairs(secrets) do
      local path = file(([[return { traffic_ops = { url = "http://to", password = %q }, influxdb = { urls = { "http://i" }, password = %q },
        summary = { sinks = { "pg" } }, postgres = { conninfo = %q } }]]):format(s, s, "postgresql://tstats:" .. s .. "@db.example:5432/traffic_ops"))
      local rc, out, err = stack.run(tstats .. " check --config " .. path)
      assert.are.equal(0, rc, err)
      assert.truthy(out:find('traffic_ops.password%s+= "%*%*%*%*"'), out)
      assert.truthy(out:find('influxdb.password%s+= "%*%*%*%*"'), out)
      assert.truthy(out:find('postgres.conninfo%s+= "postgresql://%*%*%*%*@db.example:5432/%*%*%*%*"'), out)
      for _, part in ipairs({ s, "hunter2", "ss:word", "mypass", "3cret" }) do
        if s:find(part, 1, true) then assert.falsy(out:find(part, 1, true), s .. " shows " .. part .. "\n" .. out) end
      end
    end
    local path = file([[return { traffic_ops = { url = "http://to" }, influxdb = { urls = { "http://i" } },
      summary = { sinks = { "pg" } }, postgres = { conninfo = "host=db user=ts password=p@ss:w0rd dbname=to" } }]])
    local _, out = stack.run(tstats .. " check --config " .. path)
    assert.truthy(out:find('postgres.conninfo%s+= "%*%*%*%*"'), out)
    assert.falsy(out:find("w0rd", 1, true), out)
  end)

  it("check --connect logs in to Traffic Ops, pings every InfluxDB and says what is missing, connects to PostgreSQL", function()
    local sim = start_sim("--cdns 1 --caches 2 --ds 1")
    local other = stack.influxd_start()
    local pg = stack.pg_start()
    local function cfg(password, urls, pgpart)
      return file(([[return { traffic_ops = { url = %q, user = "admin", password = %q, timeout = 3 },
        influxdb = { urls = { %s }, timeout = 3 }, %s }]]):format(sim.to_url, password, urls, pgpart or "summary = { enabled = false }"))
    end
    stack.run(tstats .. " setup-influx --url " .. sq(influx.url))
    local good = cfg("twelve12", ("%q, %q"):format(influx.url, other.url),
      ("summary = { sinks = { 'pg' } }, postgres = { conninfo = %q }"):format(pg.conninfo))
    pg:psql("CREATE TABLE IF NOT EXISTS stats_summary (id bigserial)")
    local rc, out = stack.run(tstats .. " check --connect --config " .. good, { timeout = 60 })
    assert.are.equal(1, rc, out)   -- the second influxd has no databases yet
    assert.truthy(out:find("PASS Traffic Ops " .. sim.to_url .. ": logged in as admin", 1, true), out)
    assert.truthy(out:find("PASS InfluxDB " .. influx.url .. ": reachable", 1, true), out)
    assert.truthy(out:find("FAIL InfluxDB " .. other.url .. ": reachable, databases missing: cache_stats, deliveryservice_stats, daily_stats (run `tstats setup-influx`)", 1, true), out)
    assert.truthy(out:find("PASS PostgreSQL postgresql://****@", 1, true), out)
    assert.falsy(out:find(pg.password, 1, true), out)
    stack.run(tstats .. " setup-influx --url " .. sq(other.url))
    rc, out = stack.run(tstats .. " check --connect --config " .. good, { timeout = 60 })
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("# every check passed", 1, true), out)
    local bad = cfg("wrong", ("%q, %q"):format(influx.url, "http://127.0.0.1:1"),
      "summary = { sinks = { 'pg' } }, postgres = { conninfo = 'postgresql://tstats:nope@127.0.0.1:1/traffic_ops' }")
    rc, out = stack.run(tstats .. " check --connect --config " .. bad, { timeout = 60 })
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("FAIL Traffic Ops [^\n]*401"), out)
    assert.truthy(out:find("FAIL InfluxDB http://127.0.0.1:1: ", 1, true), out)
    assert.truthy(out:find("FAIL PostgreSQL ", 1, true), out)
    assert.truthy(out:find("# 3 check(s) failed", 1, true), out)
    assert.falsy(out:find("nope", 1, true), out)
    sim:kill()
  end)

  it("once exits 1 when a CDN's poll failed and 3 when it fell back to cached Traffic Ops data", function()
    local sim = start_sim("--cdns 2 --caches 2 --ds 1 --payload-cache-ms 0")
    stack.run(tstats .. " setup-influx --url " .. sq(influx.url))
    local state = tmp .. "/state-once"
    local function cfg(password)
      return file(([[return { traffic_ops = { url = %q, user = "admin", password = %q, timeout = 3 },
        influxdb = { urls = { %q } }, state_dir = %q, collect = { timeout = 2, connect_timeout = 1 },
        summary = { enabled = false } }]]):format(sim.to_url, password, influx.url, state))
    end
    local rc, _, err = stack.run(tstats .. " once --config " .. cfg("twelve12"), { timeout = 60 })
    assert.are.equal(0, rc, err)
    rc, _, err = stack.run(tstats .. " once --config " .. cfg("wrong"), { timeout = 60 })
    assert.are.equal(3, rc, err)
    assert.truthy(err:find("last good", 1, true), err)
    sim.post("/sim/fault?spec=503@cdn2")
    rc, _, err = stack.run(tstats .. " once --config " .. cfg("twelve12"), { timeout = 60 })
    assert.are.equal(1, rc, err)
    assert.truthy(err:find("endpoint polls failed", 1, true), err)
    rc, _, err = stack.run(tstats .. " help once")
    sim:kill()
  end)
end)
