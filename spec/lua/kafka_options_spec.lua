-- kafka_options_spec.lua: the kafka.* keys of lua/options.lua (Lua side, no binary): defaults,
-- the checks of the free-form tables, refusals that name the key (what `tstats check` prints).
local O = require "options"

-- no pg sink: a base config with no postgres.conninfo must be valid
local base = { traffic_ops = { url = "http://to" }, influxdb = { urls = { "http://i:8086" } }, summary = { sinks = {} } }
local function resolve(kafka)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  t.kafka = kafka
  return O.resolve(t, "test")
end

describe("kafka options", function()
  it("defaults: off, json, acks all, idempotent, one point per message", function()
    local cfg = assert(resolve(nil))
    assert.are.equal(false, cfg.kafka.enabled)
    assert.are.equal("json", cfg.kafka.format)
    assert.are.equal("all", cfg.kafka.acks)
    assert.are.equal(true, cfg.kafka.idempotence)
    assert.are.equal(1, cfg.kafka.points_per_message)
    assert.are.same({}, cfg.kafka.properties)
  end)

  it("keeps false and the tables as given", function()
    local cfg = assert(resolve({ enabled = true, brokers = "k:9092", topic = "t", idempotence = false, acks = "1",
      topics = { daily_stats = "d" }, properties = { ["security.protocol"] = "ssl", ["message.timeout.ms"] = 60000,
      ["enable.ssl.certificate.verification"] = true } }))
    assert.are.equal(false, cfg.kafka.idempotence)
    assert.are.equal("d", cfg.kafka.topics.daily_stats)
    assert.are.equal(60000, cfg.kafka.properties["message.timeout.ms"])
  end)

  it("refuses what it does not understand, naming the key", function()
    local _, errs = resolve({ format = "avro" })
    assert.truthy(errs[1]:find("'kafka.format' must be one of json, lp", 1, true), errs[1])
    _, errs = resolve({ properties = { acks = "1" } })
    assert.truthy(errs[1]:find('["acks"]: set kafka.acks instead', 1, true), errs[1])
    _, errs = resolve({ properties = { partitioner = "random" } })
    assert.truthy(errs[1]:find("partitions by series key", 1, true), errs[1])
    _, errs = resolve({ properties = { ["sasl.password"] = { "x" } } })
    assert.truthy(errs[1]:find("must be a string, a number or a boolean", 1, true), errs[1])
    _, errs = resolve({ topics = { cache_stats = "" } })
    assert.truthy(errs[1]:find("must be a non-empty string", 1, true), errs[1])
    _, errs = resolve({ points_per_message = 0 })
    assert.truthy(errs[1]:find("at least 1", 1, true), errs[1])
    _, errs = resolve({ brokerz = "x" })
    assert.truthy(errs[1]:find("'kafka.brokerz' is not a known option (did you mean 'kafka.brokers'?)", 1, true), errs[1])
  end)

  it("masks the properties in the dump (SASL passwords live there)", function()
    local cfg = assert(resolve({ properties = { ["sasl.password"] = "hunter2" } }))
    local dump = O.dump(cfg)
    assert.falsy(dump:find("hunter2", 1, true))
    assert.truthy(dump:find("kafka.properties%s+= {...}"))
  end)
end)
