-- options_spec.lua: lua/options.lua (Lua side) for the settings of issue 11: an empty
-- influxdb.urls is refused (a reload to it would leave requests in flight nowhere to go),
-- and the spool.* keys are validated like every other key.
local O = require("options")

local function base(extra)
  -- no pg sink: a base config with no postgres.conninfo must be valid
  local t = { traffic_ops = { url = "http://to" }, influxdb = { urls = { "http://i:8086" } }, summary = { sinks = {} } }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("options for the spool and the InfluxDB targets", function()
  it("refuses an empty influxdb.urls, naming the key", function()
    local cfg, errs = O.resolve(base({ influxdb = { urls = {} } }), "test.lua")
    assert.is_nil(cfg)
    assert.are.equal(1, #errs)
    assert.truthy(errs[1]:find("'influxdb.urls' must list at least one value", 1, true), errs[1])
    assert.truthy(O.resolve(base()))
  end)

  it("resolves the spool defaults and checks the spool keys", function()
    local cfg = assert(O.resolve(base()))
    assert.are.equal(true, cfg.spool.enabled)
    assert.are.equal("interval", cfg.spool.fsync)
    assert.are.equal(1024 * 1024 * 1024, cfg.spool.max_bytes)
    local _, errs = O.resolve(base({ spool = { fsync = "sometimes" } }))
    assert.truthy(errs and errs[1]:find("'spool.fsync' must be one of interval, always, never", 1, true))
    _, errs = O.resolve(base({ spool = { max_bytes = 100 } }))
    assert.truthy(errs and errs[1]:find("'spool.max_bytes' must be at least", 1, true))
    _, errs = O.resolve(base({ spool = { fsink = "always" } }))
    assert.truthy(errs and errs[1]:find("did you mean 'spool.fsync'", 1, true), errs and errs[1])
  end)
end)
