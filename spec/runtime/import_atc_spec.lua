-- Runtime spec: `tstats import-atc` on ATC's sample traffic_stats.cfg and on
-- variants (string numbers as ATC's Ansible template renders them, missing
-- keys, unknown keys, invalid JSON); the generated file must pass `tstats check`.
local stack = require "spec.runtime.stack"
local cjson = require "cjson"
local q = stack.quote

describe("tstats import-atc #asan", function()
  local tstats = stack.bin("tstats")
  local fixture = stack.root() .. "/spec/fixtures/config/traffic_stats.cfg"
  local tmp

  setup(function() tmp = stack.tmpdir() end)
  teardown(function() stack.cleanup_all() end)

  local n = 0
  local function variant(edit)
    local doc = cjson.decode(stack.read_file(fixture))
    edit(doc)
    n = n + 1
    local p = tmp .. "/variant" .. n .. ".cfg"
    stack.write_file(p, cjson.encode(doc))
    return p
  end
  local function import(file, extra, env)
    local out = tmp .. "/out" .. tostring(math.random(1e9)) .. ".lua"
    local rc, stdout, err = stack.run(tstats .. " import-atc " .. stack.quote(file) .. " --out " .. out .. " " .. (extra or ""),
      { env = env })
    return rc, err, out, stdout
  end
  local function check(path, env)
    return stack.run(tstats .. " check --config " .. stack.quote(path), { env = env })
  end

  local kafka_options
  local function has_kafka_options()
    if kafka_options == nil then
      local _, out = stack.run(tstats .. " options")
      kafka_options = out:find("| `kafka.", 1, true) ~= nil
    end
    return kafka_options
  end

  it("converts ATC's sample config into one `tstats check` accepts, with the same values", function()
    local rc, err, out = import(fixture)
    assert.are.equal(0, rc, err)
    local text = assert(stack.read_file(out))
    assert.truthy(text:find('password = env("TO_PASSWORD")', 1, true), text)
    assert.truthy(text:find('password = env("INFLUX_PASSWORD")', 1, true), text)
    assert.truthy(err:find("set TO_PASSWORD", 1, true), err)
    assert.truthy(err:find("set INFLUX_PASSWORD", 1, true), err)
    local crc, cout, cerr = check(out, { TO_PASSWORD = "pw-from-env" })
    assert.are.equal(0, crc, cerr)
    for _, want in ipairs({
      'traffic_ops.url%s+= "https://localhost"', 'traffic_ops.user%s+= "admin"', 'traffic_ops.timeout%s+= 10',
      'traffic_ops.status_to_monitor%s+= "ONLINE"', 'influxdb.urls%s+= {"http://localhost:8086"}',
      'influxdb.user%s+= "influxUser"', 'influxdb.max_publish_size%s+= 10000', 'polling_interval%s+= 10',
      'publishing_interval%s+= 30', 'daily_summary_interval%s+= 300', 'config_interval%s+= 300',
      'retention.cache%s+= "daily"', 'retention.ds%s+= "daily"', 'retention.daily%s+= "indefinite"',
      'summary.sinks%s+= {"api"}', 'traffic_ops.password%s+= "%*%*%*%*"',
    }) do
      assert.truthy(cout:find(want), want .. "\n" .. cout)
    end
    -- what could not be mapped is named with the reason
    assert.truthy(err:find("'seelogConfig' seelog XML is not read", 1, true), err)
    assert.truthy(err:find("'configInterval' missing", 1, true), err)
    if has_kafka_options() then
      assert.falsy(err:find("kafkaConfig.brokers' not mapped yet", 1, true), err)
      assert.truthy(cout:find('kafka%.'), cout)
    else
      for _, k in ipairs({ "enable", "brokers", "topic", "requiredAcks", "enableTls", "rootCA", "clientCert", "clientCertKey" }) do
        assert.truthy(err:find("'kafkaConfig." .. k .. "' not mapped yet", 1, true), k .. "\n" .. err)
      end
    end
  end)

  it("maps kafkaConfig onto kafka.* when this build has them, else names every key 'not mapped yet'", function()
    local p = variant(function(d)
      local k = d.kafkaConfig
      k.enable = true; k.enableTls = true; k.requiredAcks = -1
      k.rootCA = "/etc/ts/ca.pem"; k.clientCert = "/etc/ts/c.pem"; k.clientCertKey = "/etc/ts/k.pem"
    end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    if has_kafka_options() then
      assert.falsy(err:find("not mapped yet", 1, true), err)
      local crc, cout, cerr = check(out)
      assert.are.equal(0, crc, cerr)
      for _, want in ipairs({ 'kafka.enabled%s+= true', 'kafka.brokers%s+= "localhost:9092"',
        'kafka.topic%s+= "traffic%-stats"', 'kafka.acks%s+= "all"' }) do
        assert.truthy(cout:find(want), want .. "\n" .. cout)
      end
      local text = stack.read_file(out)
      for _, want in ipairs({ '["security.protocol"] = "ssl"', '["ssl.ca.location"] = "/etc/ts/ca.pem"',
        '["ssl.certificate.location"] = "/etc/ts/c.pem"', '["ssl.key.location"] = "/etc/ts/k.pem"' }) do
        assert.truthy(text:find(want, 1, true), want .. "\n" .. text)
      end
      -- acks other than all: the idempotent producer (which needs all) is turned off, said in a note
      rc, err, out = import(variant(function(d) d.kafkaConfig.enable = true; d.kafkaConfig.requiredAcks = 1 end))
      assert.are.equal(0, rc, err)
      local crc2, cout2, cerr2 = check(out)
      assert.are.equal(0, crc2, cerr2)
      assert.truthy(cout2:find('kafka.acks%s+= "1"'), cout2)
      assert.truthy(cout2:find('kafka.idempotence%s+= false'), cout2)
    else
      for _, k in ipairs({ "enable", "brokers", "topic", "requiredAcks", "enableTls", "rootCA", "clientCert", "clientCertKey" }) do
        assert.truthy(err:find("'kafkaConfig." .. k .. "' not mapped yet", 1, true), k .. "\n" .. err)
      end
    end
  end)

  it("converts a config the daemon then runs with: Traffic Ops, InfluxDB and Kafka as ATC would", function()
    if not has_kafka_options() then pending("no Kafka export in this build"); return end
    local cj = require "cjson"
    local influx = stack.influxd_start_atc()
    local sim = stack.sim_start("--cdns 1 --caches 3 --ds 2")
    local d, to_url = sim.dir, sim.to_url
    local fifo = d .. "/control"
    assert(os.execute("mkfifo " .. q(fifo)))
    local mock = stack.spawn(q(stack.bin("tstats-kafka-mock")) .. " --control " .. q(fifo) .. " --topic traffic-stats --partitions 2",
      d .. "/mock.log")
    local brokers = stack.wait_until(function()
      return (stack.read_file(d .. "/mock.log") or ""):match("bootstrap.servers=(%S+)")
    end, 15, 0.05)
    assert(brokers, stack.read_file(d .. "/mock.log"))
    local p = variant(function(doc)
      doc.toUrl = to_url; doc.toPasswd = "twelve12"; doc.influxUrls = { influx.url }; doc.influxUser = ""
      doc.kafkaConfig.enable = true; doc.kafkaConfig.brokers = brokers; doc.kafkaConfig.requiredAcks = -1
    end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    -- the test's own state dir instead of /var/lib/tstats
    stack.write_file(out, (stack.read_file(out):gsub("return {", ("return {\n  state_dir = %q,"):format(d .. "/state"), 1)))
    local orc, _, oerr = stack.run(tstats .. " --config " .. q(out) .. " once", { timeout = 90, env = { TO_PASSWORD = "twelve12" } })
    assert.are.equal(0, orc, oerr)
    assert.truthy(oerr:find("Sent %d+ stats for cache_stats"), oerr)
    local res = stack.influx_query(influx.url, 'SELECT count(value) FROM "daily"."bandwidth"', "cache_stats")
    assert.are.equal(3, res.results[1].series[1].values[1][2])
    local dump = d .. "/dump"
    assert(os.execute("printf 'dump traffic-stats %s\\n' " .. q(dump) .. " > " .. q(fifo)))
    assert.truthy(stack.wait_until(function() return stack.read_file(dump) end, 60, 0.1))
    local n, bw = 0, 0
    for line in stack.read_file(dump):gmatch("[^\n]+") do
      local doc = cj.decode(line:match("^%d+\t[^\t]*\t(.*)$"))
      n = n + 1
      assert.truthy(doc.name and doc.tags and doc.fields and doc.time, line)
      if doc.name == "bandwidth" then bw = bw + 1 end
    end
    print(("\n[import-atc] converted config: %d Kafka messages, %d bandwidth"):format(n, bw))
    assert.are.equal(3, bw)
    sim:stop()
    mock:stop()
    influx:stop()
  end)

  it("never writes a secret in clear unless asked, and then keeps the file private", function()
    local p = variant(function(d) d.toPasswd = "to-secret-1"; d.influxPassword = "influx-secret-2" end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    local text = stack.read_file(out)
    assert.falsy(text:find("to-secret-1", 1, true))
    assert.falsy(text:find("influx-secret-2", 1, true))
    assert.falsy(err:find("secret", 1, true), err)
    rc, err, out = import(p, "--secrets-in-clear")
    assert.are.equal(0, rc, err)
    text = stack.read_file(out)
    assert.truthy(text:find('"to-secret-1"', 1, true))
    assert.truthy(text:find('"influx-secret-2"', 1, true))
    local _, mode = stack.run("stat -c %a " .. out)
    assert.are.equal("600", mode:gsub("%s", ""))
  end)

  it("takes a number written as a string (Ansible's toRequestTimeout) with a warning", function()
    local p = variant(function(d) d.toRequestTimeout = "25"; d.pollingInterval = "5" end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("'toRequestTimeout' is the string \"25\"", 1, true), err)
    local crc, cout = check(out)
    assert.are.equal(0, crc)
    assert.truthy(cout:find("traffic_ops.timeout%s+= 25"), cout)
    assert.truthy(cout:find("polling_interval%s+= 5\n"), cout)
    -- a string that is no number is refused, by name
    p = variant(function(d) d.toRequestTimeout = "ten" end)
    rc, err = import(p)
    assert.are.equal(1, rc)
    assert.truthy(err:find("'toRequestTimeout' is not an integer", 1, true), err)
  end)

  it("applies ATC's defaults for missing or zero keys and names them", function()
    local p = variant(function(d)
      d.pollingInterval = nil; d.publishingInterval = 0; d.statusToMon = nil; d.maxPublishSize = nil
      d.toRequestTimeout = -1; d.kafkaConfig = nil; d.seelogConfig = nil
    end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("'pollingInterval' missing", 1, true), err)
    assert.truthy(err:find("'publishingInterval' is 0", 1, true), err)
    assert.truthy(err:find("'statusToMon' missing", 1, true), err)
    local crc, cout = check(out)
    assert.are.equal(0, crc)
    assert.truthy(cout:find("polling_interval%s+= 10\n"), cout)
    assert.truthy(cout:find("publishing_interval%s+= 30\n"), cout)
    assert.truthy(cout:find("traffic_ops.timeout%s+= 10\n"), cout)
    assert.truthy(cout:find("influxdb.max_publish_size%s+= 10000\n"), cout)
  end)

  it("reports unknown keys, UDP URLs and disableInflux by name and still succeeds", function()
    local p = variant(function(d)
      d.someFutureKey = 1; d.influxUrls = { "udp://localhost:8089", "https://influx.example.net:8086" }
      d.disableInflux = true
      d.logs = { error = "/var/log/ts/error.log", warning = "/var/log/ts/error.log", info = "", debug = cjson.null, event = "stdout" }
    end)
    local rc, err, out = import(p)
    assert.are.equal(0, rc, err)
    assert.truthy(err:find("'someFutureKey' is not a key ATC's Traffic Stats knows", 1, true), err)
    assert.truthy(err:find("'influxUrls' 'udp://localhost:8089': UDP is not supported", 1, true), err)
    assert.truthy(err:find("'disableInflux' is true", 1, true), err)
    assert.truthy(err:find("'logs' ATC writes its logs to 2 destinations", 1, true), err)
    local crc, cout = check(out)
    assert.are.equal(0, crc)
    assert.truthy(cout:find('influxdb.urls%s+= {"https://influx.example.net:8086"}'), cout)
    assert.truthy(cout:find("summary.enabled%s+= false"), cout)
    assert.truthy(cout:find('log.file%s+= "/var/log/ts/error.log"'), cout)
    assert.truthy(cout:find('log.level%s+= "info"'), cout)
  end)

  it("fails with exit 1 on invalid JSON, an unreadable file, or a missing required key", function()
    local bad = tmp .. "/bad.cfg"
    stack.write_file(bad, '{ "toUrl": "https://to", "influxUrls": [ "http://i:8086" ], }')
    local rc, err, out = import(bad)
    assert.are.equal(1, rc)
    assert.truthy(err:find("is not valid JSON", 1, true), err)
    assert.is_nil(stack.read_file(out))
    rc, err = import(tmp .. "/does-not-exist.cfg")
    assert.are.equal(1, rc)
    assert.truthy(err:find("cannot read", 1, true), err)
    rc, err = import(variant(function(d) d.toUrl = nil end))
    assert.are.equal(1, rc)
    assert.truthy(err:find("'toUrl' is missing", 1, true), err)
    rc, err = import(variant(function(d) d.influxUrls = {} end))
    assert.are.equal(1, rc)
    assert.truthy(err:find("No InfluxDB urls provided in influxUrls", 1, true), err)
    stack.write_file(bad, "[1, 2]")
    rc, err = import(bad)
    assert.are.equal(1, rc)
    assert.truthy(err:find("not a JSON object", 1, true), err)
  end)

  it("keeps an existing output file unless --force", function()
    local rc, err, out = import(fixture)
    assert.are.equal(0, rc, err)
    local _; rc, _, err = stack.run(tstats .. " import-atc " .. fixture .. " --out " .. out)
    assert.are.equal(1, rc)
    assert.truthy(err:find("exists", 1, true), err)
    rc = stack.run(tstats .. " import-atc " .. fixture .. " --out " .. out .. " --force")
    assert.are.equal(0, rc)
    local hrc, hout = stack.run(tstats .. " import-atc --help")
    assert.are.equal(0, hrc)
    assert.truthy(hout:find("usage: tstats import-atc FILE", 1, true))
  end)
end)
