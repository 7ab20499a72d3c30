-- The Lua half of the `tstats` API (Lua side): InfluxDB query/write/exec
-- shaped on top of the C transport primitives (tstats._influx_post,
-- tstats._encode_points, tstats._queue_points). Contract: lua/README.md.
local tstats = require "tstats"
local json = tstats.json
local enc = tstats.http.urlencode

local influx = {}
tstats.influx = influx

local function form(t)
  local parts = {}
  for _, k in ipairs({ "q", "db", "rp", "epoch", "precision", "chunked" }) do
    if t[k] ~= nil then parts[#parts + 1] = k .. "=" .. enc(tostring(t[k])) end
  end
  return table.concat(parts, "&")
end

local function server_error(status, body)
  local ok, doc = pcall(json.decode, body)
  if ok and type(doc) == "table" and doc.error then return ("HTTP %d: %s"):format(status, doc.error) end
  return ("HTTP %d: %s"):format(status, (body or ""):sub(1, 300))
end

-- Returns the series of every statement, concatenated, or nil, err.
function influx.query(q, opts)
  opts = opts or {}
  local status, body = tstats._influx_post("/query",
    form { q = q, db = opts.db, rp = opts.rp, epoch = opts.epoch or "ms" },
    "application/x-www-form-urlencoded")
  if not status then return nil, body end
  if status ~= 200 then return nil, server_error(status, body) end
  local ok, doc = pcall(json.decode, body)
  if not ok or type(doc) ~= "table" then return nil, "unparsable InfluxDB answer" end
  if doc.error then return nil, doc.error end
  local out = {}
  for _, res in ipairs(doc.results or {}) do
    if res.error then return nil, res.error end
    for _, s in ipairs(res.series or {}) do
      -- cjson decodes every number as a float; epoch times are integers.
      local ti
      for i, c in ipairs(s.columns or {}) do if c == "time" then ti = i end end
      if ti then
        for _, row in ipairs(s.values or {}) do
          if type(row[ti]) == "number" then row[ti] = math.tointeger(row[ti]) or row[ti] end
        end
      end
      out[#out + 1] = { name = s.name, tags = s.tags, columns = s.columns, values = s.values }
    end
  end
  return out
end

-- Rows as tables keyed by column name: { {time=, value=, cdn=...}, ... } (tags merged in).
function influx.rows(q, opts)
  local series, err = influx.query(q, opts)
  if not series then return nil, err end
  local rows = {}
  for _, s in ipairs(series) do
    for _, v in ipairs(s.values or {}) do
      local r = {}
      for k, tv in pairs(s.tags or {}) do r[k] = tv end
      for i, c in ipairs(s.columns) do
        local x = v[i]
        if x ~= json.null then r[c] = x end
      end
      r._series = s.name
      rows[#rows + 1] = r
    end
  end
  return rows
end

function influx.exec(statement, opts)
  opts = opts or {}
  local status, body = tstats._influx_post("/query", form { q = statement, db = opts.db },
    "application/x-www-form-urlencoded")
  if not status then return nil, body end
  if status ~= 200 then return nil, server_error(status, body) end
  local ok, doc = pcall(json.decode, body)
  if ok and type(doc) == "table" then
    for _, res in ipairs(doc.results or {}) do
      if res.error then return nil, res.error end
    end
  end
  return true
end

-- write{db=, rp=, precision=, points={...}, sync=false}
local function count_skipped(errors)
  for _, e in ipairs(errors) do
    tstats.warn("influx.write: skipped " .. e)
    tstats.count("lua_points_invalid")
  end
end

function influx.write(t)
  assert(type(t) == "table" and t.db and t.points, "influx.write{db=, points=} expected")
  local precision = t.precision or "ms"
  if not t.sync then
    -- encoded by C straight into the writer's queue
    local count, errors = tstats._queue_points(t.points, t.db, t.rp or "", precision)
    if not count then return nil, errors end
    count_skipped(errors)
    return count
  end
  local body, count, errors = tstats._encode_points(t.points, precision)
  count_skipped(errors)
  if count == 0 then return 0 end
  local q = "/write?db=" .. enc(t.db) .. "&precision=" .. precision
  if t.rp and t.rp ~= "" then q = q .. "&rp=" .. enc(t.rp) end
  local status, rbody = tstats._influx_post(q, body)
  if not status then return nil, rbody end
  if status ~= 204 and status ~= 200 then return nil, server_error(status, rbody) end
  -- a synchronous write that failed is retried by its caller: Kafka gets the
  -- points once, when InfluxDB took them
  if tstats._kafka_lines then tstats._kafka_lines(t.db, t.rp or "", precision, body) end
  return count
end

return tstats
