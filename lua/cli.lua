-- Subcommands that are Lua functions (Lua side): setup-influx, rollup,
-- backfill-cq, script, options. Called by src/cli.c as
-- cli.main(command, args, stdout_is_a_tty) → exit code.
local tstats = require "tstats"

local C = {}

local function parse(args, spec)
  local o, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name = a:match("^%-%-([%w-]+)$")
    if name and spec[name] == "value" then
      o[name] = args[i + 1]
      if not o[name] then error("--" .. name .. " needs a value", 0) end
      i = i + 2
    elseif name and spec[name] == "flag" then
      o[name] = true
      i = i + 1
    elseif name then
      error("unknown option " .. a, 0)
    else
      rest[#rest + 1] = a
      i = i + 1
    end
  end
  return o, rest
end

local function date_to_s(d)
  local y, m, dd = tostring(d or ""):match("^(%d%d%d%d)-(%d%d)-(%d%d)$")
  if not y then error("dates are YYYY-MM-DD, got '" .. tostring(d) .. "'", 0) end
  return require("tstats.civil").days_from_civil(tonumber(y), tonumber(m), tonumber(dd)) * 86400
end
C.date_to_s = date_to_s

function C.options()
  print(require("options").markdown())
  return 0
end

function C.setup_influx(args)
  local o = parse(args, { replication = "value" })
  local cfg = tstats.config
  local schema = require "schema"
  local rename = {
    cache_stats = cfg.databases.cache, deliveryservice_stats = cfg.databases.ds, daily_stats = cfg.databases.daily,
  }
  local failed = 0
  for _, stmt in ipairs(schema.statements(tonumber(o.replication), rename)) do
    local ok, err = tstats.influx.exec(stmt)
    if ok then
      tstats.info("ok: " .. stmt:sub(1, 120))
    else
      failed = failed + 1
      tstats.error("failed: " .. stmt:sub(1, 120) .. ": " .. tostring(err))
    end
  end
  return failed == 0 and 0 or 1
end

local function progress_printer(tty)
  return function(i, n, day)
    if tty then
      local width = 30
      local done = math.floor(width * i / n)
      io.write(("\r[%s%s] %d/%d %s"):format(("#"):rep(done), ("."):rep(width - done), i, n, day.date))
      if i == n then io.write("\n") end
      io.flush()
    else
      print(("rollup %d/%d %s"):format(i, n, day.date))
    end
  end
end

function C.rollup(args, tty)
  local o = parse(args, { from = "value", to = "value", cdn = "value", rollup = "value" })
  if not o.from or not o.to then error("rollup needs --from YYYY-MM-DD --to YYYY-MM-DD", 0) end
  local summary = require "summary"
  local ok, err = summary.range(o.from, o.to, {
    cdn = o.cdn, rollup = o.rollup, progress = progress_printer(tty),
    from_s = date_to_s(o.from), to_s = date_to_s(o.to),
  })
  if not ok then tstats.error("rollup failed: " .. tostring(err)); return 1 end
  return 0
end

function C.backfill_cq(args, tty)
  local o = parse(args, { from = "value", to = "value", chunk = "value", ["no-rollup"] = "flag" })
  if not o.from or not o.to then error("backfill-cq needs --from YYYY-MM-DD --to YYYY-MM-DD", 0) end
  local backfill = require "backfill"
  local ok, err = backfill.run(o.from, o.to, {
    chunk_hours = tonumber(o.chunk), rollup = not o["no-rollup"], progress = progress_printer(tty),
    from_s = date_to_s(o.from), to_s = date_to_s(o.to),
  })
  if not ok then tstats.error("backfill-cq failed: " .. tostring(err)); return 1 end
  return 0
end

function C.script(args)
  local file = args[1]
  if not file then error("usage: tstats script FILE.lua [ARGS]", 0) end
  local chunk, err = loadfile(file, "t")
  if not chunk then error(err, 0) end
  _G.arg = { [0] = file, table.unpack(args, 2) }
  local rc = chunk(table.unpack(args, 2))
  if rc == nil or rc == true then return 0 end
  if rc == false then return 1 end
  return math.tointeger(rc) or 1
end

-- Commands that live in their own module (lua/commands/<name>.lua) with an
-- option spec (`options`, parse() format), `usage` and run(opts, rest, tty).
for _, name in ipairs({ "import_atc", "sync", "grafana" }) do
  C[name] = function(args, tty)
    local m = require("commands." .. name)
    for _, a in ipairs(args) do
      if a == "--help" or a == "-h" then print(m.usage); return 0 end
    end
    local o, rest = parse(args, m.options)
    return m.run(o, rest, tty)
  end
end

function C.main(cmd, args, tty)
  local fn = C[cmd:gsub("-", "_")]
  if not fn then error("unknown command " .. cmd, 0) end
  local ok, rc = pcall(fn, args, tty)
  if not ok then
    io.stderr:write("tstats " .. cmd .. ": " .. tostring(rc) .. "\n")
    return 2
  end
  return rc
end

return C
