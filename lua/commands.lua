-- The command table (Lua side): every subcommand of `tstats` with its summary,
-- options, arguments, exit codes and the function that runs it. src/cli.c asks
-- parse() what to do before anything else (including the daemon modes run in C),
-- so help, usage errors, README and man pages all come from this one table.
local K = {}

-- Options every command accepts (before or after the command name).
K.global = {
  { "config", "FILE", "configuration file (Lua); default: the embedded config.lua", short = "c" },
  { "log-level", "LEVEL", "error | warn | info | debug; overrides log.level", enum = { "error", "warn", "warning", "info", "debug" } },
  { "log-format", "FORMAT", "text | json | logfmt; overrides log.format", enum = { "text", "json", "logfmt" } },
  { "help", false, "print this command's help and exit", short = "h" },
}

local EXIT_USAGE = { 2, "usage error (unknown option, stray argument, bad value) or invalid configuration" }

-- One entry per command. Fields:
--   name, summary (one line), description (a paragraph for the help and the man page),
--   options = { { name, VALUE-NAME | false (a flag), help, type = "date" | "datetime" | "int" | "number",
--                 min =, enum = {...}, multi = true (repeatable: a list), required = true } },
--   args = { { NAME, help, optional = true, rest = true (repeatable), passthrough = true (everything
--            after the first argument is the command's own, options included) } },
--   exits = { { code, meaning } },
--   config = "required" (default) | "none" (runs without loading a configuration),
--   daemon = "run" | "once" | "dryrun" (run by the C daemon) or run = "module.function"
--   (called as fn(opts, args, ctx) -> exit code; ctx.tty / ctx.tty_err: stdout / stderr is a terminal).
K.list = {
  { name = "run", summary = "the daemon: poll Traffic Monitors, write InfluxDB, daily summaries",
    description = "Polls every CDN's Traffic Monitor every polling_interval, publishes every publishing_interval, "
      .. "refreshes Traffic Ops every config_interval and computes daily summaries. SIGHUP reloads the "
      .. "configuration and scripts; SIGTERM/SIGINT flush buffered points (bounded by shutdown_timeout) and exit.",
    daemon = "run",
    exits = { { 0, "stopped by SIGTERM/SIGINT after flushing" }, { 1, "could not start" }, EXIT_USAGE } },
  { name = "once", summary = "one poll of every CDN, flush, exit status tells what failed (cron probe)",
    options = { { "dry-run", false, "print the line protocol instead of writing it (as `poll`)" } },
    daemon = "once",
    exits = { { 0, "every endpoint of every CDN polled and every point written" },
      { 1, "a CDN's poll failed, nothing was written, points were lost, or no Traffic Ops data at all" },
      EXIT_USAGE,
      { 3, "polled and written, but Traffic Ops answered an error: the last good (cached) data was used" } } },
  { name = "poll", summary = "one poll, print the line protocol that would be written (never writes)",
    options = { { "dry-run", false, "accepted for compatibility: poll never writes" } },
    daemon = "dryrun",
    exits = { { 0, "points printed" }, { 1, "nothing could be polled" }, EXIT_USAGE } },
  { name = "check", summary = "validate the configuration and print it (secrets masked)",
    description = "Validates every key and what fails later at run time (sinks, rollups, URL schemes, endpoint "
      .. "entries, the pg sink's conninfo). With --connect it also logs in to Traffic Ops, pings every InfluxDB "
      .. "URL (and says which databases are missing) and connects to PostgreSQL when the pg sink is set.",
    options = { { "connect", false, "also contact Traffic Ops, every InfluxDB URL and PostgreSQL" } },
    run = "check.main",
    exits = { { 0, "valid (and, with --connect, every check passed)" }, { 1, "a --connect check failed" },
      { 2, "invalid configuration or usage error" } } },
  { name = "options", summary = "print every configuration key as a Markdown table",
    config = "none", run = "cli.options", exits = { { 0, "printed" }, EXIT_USAGE } },
  { name = "setup-influx", summary = "create ATC's databases, retention policies and continuous queries",
    description = "Each object is reported as created, unchanged, or differs (with the statement that would "
      .. "make it match). Every influxdb.urls entry is set up unless --url is given.",
    options = {
      { "replication", "N", "replication factor of the retention policies (default 3, as ATC)", type = "int", min = 1 },
      { "print", false, "print the statements only; contact nothing" },
      { "dry-run", false, "same as --print" },
      { "url", "URL", "set up this InfluxDB instead of every influxdb.urls entry (repeatable)", multi = true },
    },
    run = "cli.setup_influx",
    exits = { { 0, "every object exists as ATC defines it" }, { 1, "a server was unreachable, a statement failed or an object differs" }, EXIT_USAGE } },
  { name = "rollup", summary = "recompute daily summaries for a range of days, idempotently",
    options = {
      { "from", "DATE", "first day, YYYY-MM-DD (UTC)", type = "date", required = true },
      { "to", "DATE", "last day, YYYY-MM-DD (UTC), included", type = "date", required = true },
      { "cdn", "NAME", "only this CDN (repeatable)", multi = true },
      { "rollup", "NAME", "only this rollup module (repeatable; default summary.rollups)", multi = true },
      { "dry-run", false, "compute and print the rows (day, cdn, deliveryservice, stat, value); write nothing" },
    },
    run = "cli.rollup",
    exits = { { 0, "every day computed" }, { 1, "a day failed, or nothing to compute (unknown CDN, no data)" }, EXIT_USAGE } },
  { name = "backfill-cq", summary = "re-run the continuous queries over a past window, then the rollups",
    description = "Continuous queries never backfill: this runs each CQ's SELECT ... INTO over the window, in "
      .. "chunks, then recomputes the daily summaries of the days touched.",
    options = {
      { "from", "TIME", "start, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)", type = "datetime", required = true },
      { "to", "TIME", "end (excluded), same forms", type = "datetime", required = true },
      { "chunk", "HOURS", "hours of data per query (default 6)", type = "number", min = 0.017 },
      { "no-rollup", false, "do not recompute the daily summaries afterwards" },
      { "dry-run", false, "print the queries that would run; run nothing, write nothing" },
    },
    run = "cli.backfill_cq",
    exits = { { 0, "done" }, { 1, "a query failed, or the raw data of the window has expired" }, EXIT_USAGE } },
  { name = "script", summary = "run a one-off operator script (a file, or a built-in one by name)",
    description = "NAME is a file path, or the name of a built-in script (see --list). The script gets the full "
      .. "Lua API, the configuration, and `arg`; its return value is the exit code. Everything after NAME is "
      .. "passed to the script untouched.",
    options = { { "list", false, "list the built-in scripts" } },
    args = { { "NAME", "script file or built-in script name", optional = true }, { "ARGS", "the script's arguments", rest = true, passthrough = true, optional = true } },
    run = "cli.script",
    exits = { { 0, "the script returned nil or true" }, { 1, "the script returned false" },
      { 2, "usage error, or the script raised an error" }, { "N", "the integer the script returned" } } },
  { name = "import-atc", summary = "convert ATC's traffic_stats.cfg (JSON) into a commented config.lua",
    description = "Reads an ATC Traffic Stats config and writes the equivalent tstats config.lua (to stdout, "
      .. "or to --out; an existing file is kept unless --force). Passwords become env(\"TO_PASSWORD\") / "
      .. "env(\"INFLUX_PASSWORD\"); the variables to set are printed. --secrets-in-clear copies them into "
      .. "the file instead (mode 0600). Every ATC key without an equivalent is reported on stderr with the reason.",
    options = {
      { "out", "CONFIG.lua", "write here instead of stdout" },
      { "force", false, "overwrite an existing --out file" },
      { "secrets-in-clear", false, "copy the passwords into the file (mode 0600) instead of env() references" },
    },
    args = { { "FILE", "ATC's traffic_stats.cfg" } },
    config = "none", run = "commands.import_atc.main",
    exits = { { 0, "converted (warnings on stderr)" }, { 1, "unreadable or invalid file, or --out exists" }, EXIT_USAGE } },
  { name = "sync", summary = "copy InfluxDB data between two instances where the target is missing or lower (ATC's sync_ts_databases)",
    description = "Copies every point of the selected measurements from --source to --target unless the target "
      .. "already holds it with an equal or higher value, keeping every tag, in bounded time chunks, resumable "
      .. "(progress kept in the state dir). Both URLs are required and must differ. Credentials come from the "
      .. "environment: SYNC_SOURCE_USER, SYNC_SOURCE_PASSWORD, SYNC_TARGET_USER, SYNC_TARGET_PASSWORD; TLS: "
      .. "SYNC_SOURCE_CA_FILE / SYNC_TARGET_CA_FILE, SYNC_SOURCE_INSECURE=1 / SYNC_TARGET_INSECURE=1.",
    options = {
      { "source", "URL", "InfluxDB to read (required)" },
      { "target", "URL", "InfluxDB to write (required, not the source)" },
      { "database", "DB", "cache_stats | deliveryservice_stats | daily_stats | all (default all)" },
      { "days", "N", "the last N days (default: all the data there is)" },
      { "from", "DATE", "start, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ" },
      { "to", "DATE", "end: YYYY-MM-DD inclusive, or YYYY-MM-DDTHH:MM:SSZ exclusive" },
      { "measurement", "NAME[,NAME...]", "names or globs (bandwidth.*) among the continuous-query series (repeatable; default all)", multi = true },
      { "rp", "RP", "sync the --measurement names in this retention policy instead (e.g. raw data in daily)" },
      { "chunk", "DURATION", "time per query (30m, 6h, 1d; default 6h for 1-minute series, 30d for daily ones)" },
      { "dry-run", false, "count what would be written, write nothing" },
      { "restart", false, "ignore the completed chunks recorded in the state dir" },
      { "state-dir", "DIR", "where progress is kept (default: state_dir)" },
      { "max-chunk-bytes", "N", "a chunk whose answer is larger is halved (default 64 MiB)" },
      { "batch", "N", "points per write (default 5000)" },
      { "timeout", "SECONDS", "seconds per request (default 120)" },
    },
    run = "commands.sync.main",
    exits = { { 0, "everything was copied" }, { 1, "anything failed (each failure counted and logged)" }, EXIT_USAGE } },
  { name = "grafana", summary = "write Grafana provisioning: datasources and dashboards",
    description = "Writes under DIR: provisioning/datasources/tstats.yaml (InfluxDB datasources cache_stats, "
      .. "deliveryservice_stats, daily_stats), provisioning/dashboards/tstats.yaml (a file provider) and "
      .. "dashboards/*.json (CDN overview, cache group, delivery service, server, daily summaries). The datasource "
      .. "URL is the first of influxdb.urls unless --url; the InfluxDB password is read by Grafana from its own "
      .. "environment ($INFLUX_PASSWORD), never written. Dashboards are Lua data (grafana/dashboards.lua, "
      .. "overridable in script_dir).",
    options = {
      { "out", "DIR", "where to write (required)" },
      { "url", "URL", "InfluxDB URL of the datasources (default: the first influxdb.urls)" },
      { "dashboards-path", "PATH", "where Grafana will read the dashboards (default: DIR/dashboards, absolute)" },
      { "force", false, "overwrite existing files" },
    },
    run = "commands.grafana.main",
    exits = { { 0, "written" }, { 1, "a file could not be written, or exists without --force" }, EXIT_USAGE } },
  { name = "map", summary = "run a mapping over a saved Traffic Monitor payload, offline, and print what it makes",
    description = "Polls the saved payload through the real collector (file:// URL): scanner, the mapping "
      .. "module (stock or from script_dir) and the encoder, then prints the line protocol, a per-measurement "
      .. "summary (lines starting with #) and logs every Lua error with file:line. Nothing is written.",
    options = {
      { "payload", "FILE", "a saved CacheStats, DsStats or other endpoint answer", required = true },
      { "mapping", "MODULE", "mapping module (default: the stock one of the format; 'x' means mappings.x)" },
      { "format", "FORMAT", "tm_cachestats | tm_dsstats | lua (default: guessed from the payload)", enum = { "tm_cachestats", "tm_dsstats", "lua" } },
      { "servers", "FILE", "a saved Traffic Ops servers answer (cache groups and types for the tags)" },
      { "cdn", "NAME", "the CDN name the mapping sees (default cdn1)" },
      { "endpoint", "NAME", "the endpoint name the mapping sees (default CacheStats / DsStats / Payload)" },
      { "db", "NAME", "database shown in the output (default databases.cache or .ds)" },
      { "rp", "NAME", "retention policy shown in the output" },
      { "summary", false, "print the summary only, not the lines" },
    },
    run = "maptest.map_cmd",
    exits = { { 0, "mapped without errors" }, { 1, "a Lua error or the payload could not be read or parsed" }, EXIT_USAGE } },
  { name = "test", summary = "run the examples carried by mapping and rollup modules (M.examples)",
    description = "Each example gives an input (a payload, or a rollup's query answers) and the expected "
      .. "output (lines, or rows); a difference is printed as a diff (- expected, + got). Without MODULE, "
      .. "every stock and script_dir mapping and rollup that has examples is run.",
    options = { { "verbose", false, "name every example run" } },
    args = { { "MODULE", "only these modules (e.g. mappings.cachestats)", optional = true, rest = true } },
    run = "maptest.test_cmd",
    exits = { { 0, "every example passed" }, { 1, "an example failed, or there were none" }, EXIT_USAGE } },
  { name = "config", summary = "print a commented starting configuration",
    options = { { "print-default", false, "print the embedded default config.lua (commented)", required = true } },
    config = "none", run = "cli.config_cmd", exits = { { 0, "printed" }, EXIT_USAGE } },
  { name = "help", summary = "print the help of tstats or of one command",
    options = { { "man", "SECTION", "print the man page instead: 1 (commands) or 5 (configuration)", enum = { "1", "5" } },
      { "markdown", false, "print the command table as Markdown (the README's)" } },
    args = { { "COMMAND", "the command to explain", optional = true } },
    config = "none", run = "commands.help_cmd", exits = { { 0, "printed" }, EXIT_USAGE } },
  { name = "version", summary = "print the version", config = "none", run = "commands.version_cmd",
    exits = { { 0, "printed" } } },
}

K.by_name = {}
for _, c in ipairs(K.list) do K.by_name[c.name] = c end

local function version()
  local ts = rawget(_G, "tstats")
  return ("tstats %s (%s)"):format(ts and ts.version or "?", _VERSION)
end

-- ---- usage and help texts --------------------------------------------------

local function opt_usage(o)
  local s = "--" .. o[1] .. (o[2] and (" " .. o[2]) or "")
  if o.required then return s end
  return "[" .. s .. "]" .. (o.multi and "..." or "")
end

function K.usage(c)
  if not c then return "usage: tstats [--config FILE] [--log-level LEVEL] [--log-format FORMAT] COMMAND [OPTIONS] [ARGS]" end
  local parts = { "usage: tstats", c.name }
  for _, a in ipairs(c.args or {}) do
    if not a.optional then parts[#parts + 1] = a[1] .. (a.rest and "..." or "") end
  end
  for _, o in ipairs(c.options or {}) do parts[#parts + 1] = opt_usage(o) end
  for _, a in ipairs(c.args or {}) do
    if a.optional then parts[#parts + 1] = "[" .. a[1] .. (a.rest and "..." or "") .. "]" end
  end
  return table.concat(parts, " ")
end

-- Words of s in lines of at most width columns.
local function wrap(s, width)
  local lines, cur = {}, ""
  for w in s:gmatch("%S+") do
    if #cur > 0 and #cur + 1 + #w > width then lines[#lines + 1] = cur; cur = w
    else cur = #cur > 0 and (cur .. " " .. w) or w end
  end
  if #cur > 0 then lines[#lines + 1] = cur end
  return table.concat(lines, "\n")
end

local function table_lines(out, rows)
  local w = 0
  for _, r in ipairs(rows) do if #r[1] > w then w = #r[1] end end
  for _, r in ipairs(rows) do out[#out + 1] = ("  %-" .. w .. "s  %s"):format(r[1], r[2]) end
end

local function opt_rows(opts)
  local rows = {}
  for _, o in ipairs(opts or {}) do
    local name = (o.short and ("-" .. o.short .. ", ") or "") .. "--" .. o[1] .. (o[2] and (" " .. o[2]) or "")
    rows[#rows + 1] = { name, o[3] }
  end
  return rows
end

function K.help_text(c)
  local out = {}
  if not c then
    out[#out + 1] = K.usage()
    out[#out + 1] = ""
    out[#out + 1] = "commands:"
    local rows = {}
    for _, x in ipairs(K.list) do rows[#rows + 1] = { x.name, x.summary } end
    table_lines(out, rows)
    out[#out + 1] = ""
    out[#out + 1] = "global options:"
    local rows = opt_rows(K.global)
    rows[#rows + 1] = { "--version", "print the version" }
    table_lines(out, rows)
    out[#out + 1] = ""
    out[#out + 1] = "`tstats help COMMAND` or `tstats COMMAND --help` explains one command."
    return table.concat(out, "\n") .. "\n"
  end
  out[#out + 1] = K.usage(c)
  out[#out + 1] = ""
  out[#out + 1] = c.summary .. "."
  if c.description then out[#out + 1] = ""; out[#out + 1] = wrap(c.description, 78) end
  if c.args then
    out[#out + 1] = ""
    out[#out + 1] = "arguments:"
    local rows = {}
    for _, a in ipairs(c.args) do rows[#rows + 1] = { a[1], a[2] } end
    table_lines(out, rows)
  end
  if c.options then
    out[#out + 1] = ""
    out[#out + 1] = "options:"
    table_lines(out, opt_rows(c.options))
  end
  out[#out + 1] = ""
  out[#out + 1] = "global options:"
  table_lines(out, opt_rows(K.global))
  if c.exits then
    out[#out + 1] = ""
    out[#out + 1] = "exit status:"
    local rows = {}
    for _, e in ipairs(c.exits) do rows[#rows + 1] = { tostring(e[1]), e[2] } end
    table_lines(out, rows)
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- man pages (roff) --------------------------------------------------------

local function roff(s)
  s = tostring(s):gsub("\\", "\\\\"):gsub("%-", "\\-")
  s = s:gsub("\n%.", "\n\\&."):gsub("^%.", "\\&."):gsub("^'", "\\&'")
  return s
end

local function man_opts(out, opts)
  for _, o in ipairs(opts or {}) do
    out[#out + 1] = ".TP"
    out[#out + 1] = (o.short and ("\\fB\\-" .. o.short .. "\\fR, ") or "") .. "\\fB\\-\\-" .. roff(o[1]) .. "\\fR"
      .. (o[2] and (" \\fI" .. roff(o[2]) .. "\\fR") or "")
    out[#out + 1] = roff(o[3])
  end
end

function K.man(section)
  local ts = rawget(_G, "tstats")
  local ver = ts and ts.version or ""
  local out = {}
  if section == "5" then
    local O = require "options"
    out[#out + 1] = ('.TH TSTATS.CONF 5 "" "tstats %s" "File Formats"'):format(ver)
    out[#out + 1] = ".SH NAME"
    out[#out + 1] = "tstats.conf \\- tstats configuration (a Lua file returning a table)"
    out[#out + 1] = ".SH DESCRIPTION"
    out[#out + 1] = roff("The configuration is a Lua file returning a table; env(\"NAME\", default) reads the "
      .. "environment so secrets stay out of the file. A dotted key a.b is written a = { b = ... }. An unknown key, "
      .. "a wrong type or a missing required value stops start-up naming the key and the file. "
      .. "`tstats config --print-default` prints a commented starting file; `tstats check` validates one.")
    out[#out + 1] = ".SH OPTIONS"
    for _, o in ipairs(O.list) do
      local d = O.by_key[o[1]]
      out[#out + 1] = ".TP"
      out[#out + 1] = ("\\fB%s\\fR (%s; default %s)"):format(roff(d.key), d.type, roff(O.show_default(d)))
      out[#out + 1] = roff(d.help)
    end
    out[#out + 1] = ".SH SEE ALSO"
    out[#out + 1] = "\\fBtstats\\fR(1)"
    return table.concat(out, "\n") .. "\n"
  end
  out[#out + 1] = ('.TH TSTATS 1 "" "tstats %s" "User Commands"'):format(ver)
  out[#out + 1] = ".SH NAME"
  out[#out + 1] = "tstats \\- Traffic Stats for Apache Traffic Control CDNs, scriptable in Lua"
  out[#out + 1] = ".SH SYNOPSIS"
  out[#out + 1] = "\\fBtstats\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]"
  out[#out + 1] = ".SH DESCRIPTION"
  out[#out + 1] = roff("tstats polls each CDN's Traffic Monitor, writes the stats to InfluxDB 1.x as ATC's "
    .. "Traffic Stats does, and computes daily summaries. Unknown options and stray arguments are refused "
    .. "(exit 2); `tstats COMMAND --help` prints a command's help and does nothing else.")
  out[#out + 1] = ".SH GLOBAL OPTIONS"
  man_opts(out, K.global)
  out[#out + 1] = ".TP"
  out[#out + 1] = "\\fB\\-\\-version\\fR"
  out[#out + 1] = "print the version"
  out[#out + 1] = ".SH COMMANDS"
  for _, c in ipairs(K.list) do
    out[#out + 1] = ".SS " .. roff(K.usage(c):gsub("^usage: ", ""))
    out[#out + 1] = roff(c.summary .. ".")
    if c.description then out[#out + 1] = ".PP"; out[#out + 1] = roff(c.description) end
    if c.args then
      for _, a in ipairs(c.args) do
        out[#out + 1] = ".TP"
        out[#out + 1] = "\\fI" .. roff(a[1]) .. "\\fR"
        out[#out + 1] = roff(a[2])
      end
    end
    man_opts(out, c.options)
    if c.exits then
      out[#out + 1] = ".PP"
      out[#out + 1] = "Exit status:"
      for _, e in ipairs(c.exits) do
        out[#out + 1] = ".TP"
        out[#out + 1] = roff(tostring(e[1]))
        out[#out + 1] = roff(e[2])
      end
    end
  end
  out[#out + 1] = ".SH SEE ALSO"
  out[#out + 1] = "\\fBtstats.conf\\fR(5)"
  return table.concat(out, "\n") .. "\n"
end

-- Markdown table of the commands (README "Run" section; a test compares them).
function K.markdown()
  local out = { "| command | what |", "|---|---|" }
  for _, c in ipairs(K.list) do
    local u = K.usage(c):gsub("^usage: ", "")
    out[#out + 1] = ("| `%s` | %s |"):format(u, c.summary:gsub("|", "\\|"))
  end
  return table.concat(out, "\n")
end

-- ---- the parser --------------------------------------------------------------

local function usage_error(c, msg)
  return nil, ("tstats%s: %s\n%s\n"):format(c and (" " .. c.name) or "", msg, K.usage(c))
end

local function real_date(s)
  local y, m, d = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)$")
  if not y then return nil end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 1 or m > 12 or d < 1 then return nil end
  local mdays = { 31, (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  return d <= mdays[m]
end

-- A value of an option with its type, or nil, message.
local function typed(o, v)
  if o.enum then
    for _, e in ipairs(o.enum) do if e == v then return v end end
    return nil, ("--%s must be one of %s, got '%s'"):format(o[1], table.concat(o.enum, ", "), v)
  end
  if o.type == "date" then
    if not real_date(v) then return nil, ("--%s: '%s' is not a date (YYYY-MM-DD)"):format(o[1], v) end
  elseif o.type == "datetime" then
    local d, t = v:match("^([^T]+)T(%d%d:%d%d:%d%dZ)$")
    local ok = real_date(d or v)
    if ok and t then
      local h, mi, s = t:match("(%d%d):(%d%d):(%d%d)")
      ok = tonumber(h) < 24 and tonumber(mi) < 60 and tonumber(s) < 60
    end
    if not ok then return nil, ("--%s: '%s' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"):format(o[1], v) end
  elseif o.type == "int" or o.type == "number" then
    local n = tonumber(v)
    if o.type == "int" then n = v:match("^%-?%d+$") and math.tointeger(tonumber(v)) or nil end
    if not n then return nil, ("--%s must be %s, got '%s'"):format(o[1], o.type == "int" and "an integer" or "a number", v) end
    if o.min and n < o.min then return nil, ("--%s must be at least %s, got '%s'"):format(o[1], o.min, v) end
    return n
  end
  return v
end

local function find_opt(list, name, short)
  for _, o in ipairs(list or {}) do
    if (name and o[1] == name) or (short and o.short == short) then return o end
  end
end

-- parse(argv) -> r or nil, message (the message holds the one-line usage).
-- r = { cmd = entry or nil, opts = {}, args = {}, global = { config=, ["log-level"]=, ... },
--       help = bool, version = bool }
function K.parse(argv)
  local r = { opts = {}, args = {}, global = {} }
  local i, n = 1, #argv
  local no_more_opts = false
  while i <= n do
    local a = argv[i]
    local c = r.cmd
    local rest_started = c and c.args and #r.args > 0 and c.args[#c.args].passthrough
    if rest_started or no_more_opts or a == "-" or not a:match("^%-") then
      if not c then
        c = K.by_name[a]
        if not c then return usage_error(nil, ("unknown command '%s' (`tstats help` lists them)"):format(a)) end
        r.cmd = c
      else
        local spec = c.args or {}
        local slot = spec[#r.args + 1] or (spec[#spec] and spec[#spec].rest and spec[#spec])
        if not slot then return usage_error(c, ("unexpected argument '%s'"):format(a)) end
        r.args[#r.args + 1] = a
      end
      i = i + 1
    elseif a == "--" then
      no_more_opts = true
      i = i + 1
    else
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      if not name then name = a:match("^%-%-(.+)$") end
      local short = not name and a:match("^%-(%w)$")
      if not name and not short then return usage_error(c, ("unknown option '%s'"):format(a)) end
      if name == "version" and not c then
        r.version = true
        i = i + 1
      else
        local o = find_opt(c and c.options, name, short)
        local is_global = false
        if not o then o = find_opt(K.global, name, short); is_global = o ~= nil end
        if not o then
          return usage_error(c, ("unknown option '%s'%s"):format(a, c and "" or " (options of a command follow the command)"))
        end
        if not o[2] then
          if value then return usage_error(c, ("--%s takes no value"):format(o[1])) end
          value = true
          i = i + 1
        else
          if not value then
            value = argv[i + 1]
            if value == nil or (value:match("^%-%-") and value ~= "--") then
              return usage_error(c, ("--%s needs a value (%s)"):format(o[1], o[2]))
            end
            i = i + 2
          else
            i = i + 1
          end
          local v, err = typed(o, value)
          if v == nil then return usage_error(c, err) end
          value = v
        end
        local into = is_global and r.global or r.opts
        if o.multi then
          into[o[1]] = into[o[1]] or {}
          table.insert(into[o[1]], value)
        else
          into[o[1]] = value
        end
      end
    end
  end
  if r.global.help then r.help = true end
  if r.help or r.version then return r end
  if not r.cmd then return usage_error(nil, "no command given (`tstats help` lists them)") end
  local c = r.cmd
  for _, o in ipairs(c.options or {}) do
    if o.required and r.opts[o[1]] == nil then return usage_error(c, ("--%s is required"):format(o[1])) end
  end
  local nreq = 0
  for _, a in ipairs(c.args or {}) do if not a.optional then nreq = nreq + 1 end end
  if #r.args < nreq then return usage_error(c, ("missing %s"):format(c.args[#r.args + 1][1])) end
  return r
end

-- ---- entry points called by src/cli.c ------------------------------------------

-- What C should do with argv. Returns a table:
--   { action = "exit", code = N }     (help, version or a usage error was printed)
--   { action = "daemon", mode = "run"|"once"|"dryrun", config =, log_level =, log_format = }
--   { action = "lua", command = NAME, load_config = bool, config =, log_level =, log_format = }
function K.dispatch(argv)
  local r, err = K.parse(argv)
  if not r then
    io.stderr:write(err)
    return { action = "exit", code = 2 }
  end
  if r.version then
    io.stdout:write(version(), "\n")
    return { action = "exit", code = 0 }
  end
  if r.help then
    io.stdout:write(K.help_text(r.cmd))
    return { action = "exit", code = 0 }
  end
  local c = r.cmd
  local g = r.global
  local out = { config = g.config, log_level = g["log-level"], log_format = g["log-format"] }
  if c.daemon then
    out.action = "daemon"
    out.mode = (c.name == "once" and r.opts["dry-run"]) and "dryrun" or c.daemon
  else
    out.action = "lua"
    out.command = c.name
    out.load_config = c.config ~= "none" or g.config ~= nil
  end
  return out
end

-- Runs a Lua command (the configuration is loaded when it needs one).
function K.run(argv, tty, tty_err)
  local r, err = K.parse(argv)
  if not r then io.stderr:write(err); return 2 end
  local c = r.cmd
  local mod, fn = c.run:match("^(.+)%.([%w_]+)$")
  local m = require(mod)
  local f = m[fn]
  if type(f) ~= "function" then error(("command %s: %s is not a function"):format(c.name, c.run)) end
  local ok, rc = pcall(f, r.opts, r.args, { tty = tty, tty_err = tty_err, global = r.global, command = c })
  if not ok then
    io.stderr:write("tstats " .. c.name .. ": " .. tostring(rc) .. "\n")
    return 2
  end
  if rc == nil or rc == true then return 0 end
  if rc == false then return 1 end
  return math.tointeger(rc) or 1
end

function K.help_cmd(opts, args)
  if opts.markdown then io.stdout:write(K.markdown(), "\n"); return 0 end
  if opts.man then
    if args[1] then io.stderr:write("tstats help: --man prints the whole page; no COMMAND with it\n"); return 2 end
    io.stdout:write(K.man(opts.man))
    return 0
  end
  local name = args[1]
  if name and not K.by_name[name] then
    io.stderr:write(("tstats help: unknown command '%s'\n%s\n"):format(name, K.usage(K.by_name.help)))
    return 2
  end
  io.stdout:write(K.help_text(name and K.by_name[name]))
  return 0
end

function K.version_cmd()
  io.stdout:write(version(), "\n")
  return 0
end

return K
