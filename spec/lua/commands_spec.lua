-- Spec (Lua side, pure Lua): the command table (lua/commands.lua) parses as documented, and
-- the commands that live in their own modules declare no options the table lacks.
local K = require "commands"

describe("the command table", function()
  it("parses options before and after the command, typed values, passthrough arguments", function()
    local r = assert(K.parse({ "--config", "c.lua", "setup-influx", "--replication", "2", "--url", "http://a", "--url=http://b", "--log-level", "warn" }))
    assert.are.equal("setup-influx", r.cmd.name)
    assert.are.equal(2, r.opts.replication)
    assert.are.same({ "http://a", "http://b" }, r.opts.url)
    assert.are.equal("c.lua", r.global.config)
    assert.are.equal("warn", r.global["log-level"])
    r = assert(K.parse({ "script", "x.lua", "--bogus", "-h" }))
    assert.are.same({ "x.lua", "--bogus", "-h" }, r.args)
    assert.is_nil(r.help)
    r = assert(K.parse({ "test", "mappings.a", "--verbose", "rollups.b" }))
    assert.are.same({ "mappings.a", "rollups.b" }, r.args)
    assert.is_true(r.opts.verbose)
  end)

  it("refuses what it does not understand, with the command's usage", function()
    for _, argv in ipairs({ { "check", "--bogus" }, { "run", "x" }, { "rollup", "--from", "2026-02-29", "--to", "2026-03-01" },
                            { "setup-influx", "--replication" }, { "check", "--connect=yes" }, { "nosuch" }, {} }) do
      local r, err = K.parse(argv)
      assert.is_nil(r, table.concat(argv, " "))
      assert.truthy(err:find("\nusage: tstats", 1, true), err)
    end
    assert.truthy(K.parse({ "rollup", "--from", "2024-02-29", "--to", "2024-03-01" }), "a leap day is a date")
  end)

  it("every command module's own option list (if any) matches the table", function()
    local checked = 0
    -- the modules need the C core's tstats only when they run, not to be loaded
    local saved = package.loaded.tstats
    package.loaded.tstats = package.loaded.tstats or { json = require "cjson" }
    for _, c in ipairs(K.list) do
      local mod = c.run and c.run:match("^commands%.([%w_]+)%.main$")
      local path = mod and ("./lua/commands/" .. mod .. ".lua")
      local f = path and io.open(path, "r")
      if f then
        f:close()
        local m = assert(require("commands." .. mod))
        checked = checked + 1
        local want = {}
        for _, o in ipairs(c.options or {}) do want[o[1]] = o[2] and "value" or "flag" end
        assert.are.same(want, m.options, c.name)
      end
    end
    package.loaded.tstats = saved
    assert.is_true(checked >= 3, "import-atc, sync, grafana")
  end)
end)
