-- lp_roundtrip_spec.lua: the C line protocol encoder (src/lp.c) against a REAL influxd 1.6.7.
-- Test side only: `test_lp --emit` encodes every "encode" vector of spec/fixtures/lp_vectors.json,
-- each line goes into a fresh database, and what the server stored is compared with what the
-- vector's input says (not with our own line), exact integers and timestamps included.
-- Run from the repo root: lua5.4 /usr/bin/busted spec/runtime/lp_roundtrip_spec.lua
local stack = require("spec.runtime.stack")
local cjson = require("cjson")

local INT64_MAX = "9223372036854775807"

local vectors_path = stack.root() .. "/spec/fixtures/lp_vectors.json"
local raw_vectors = assert(stack.read_file(vectors_path), "cannot read " .. vectors_path)
local vectors = cjson.decode(raw_vectors)
local by_id = {}
for _, v in ipairs(vectors) do by_id[v.id] = v end

-- cjson turns every number into a float, so integers above 2^53 (int64 bounds,
-- ns timestamps) are read from the vector's own text instead.
local function vector_text(id)
  local s = raw_vectors:find('"id": ' .. cjson.encode(id), 1, true)
  assert(s, "vector text not found: " .. id)
  local e = raw_vectors:find('"id":', s + 5, true) or #raw_vectors
  return raw_vectors:sub(s, e)
end

local function raw_int_field(id, key)
  local text = vector_text(id)
  local k = cjson.encode(key):gsub("\\/", "/") .. ":"
  local at = assert(text:find(k, 1, true), "field text not found: " .. id .. " " .. key)
  return assert(text:match('^%s*%[%s*"u?int",%s*(%-?%d+)%s*%]', at + #k), "no integer for " .. key)
end

local function raw_ts_ns(id)
  local text = vector_text(id)
  return text:match('"ns":%s*(%-?%d+)') or text:match('"ts":%s*(%-?%d+)')
end

-- What 1.x stores for a measurement / key / tag value we were given: a raw
-- newline travels as the two characters backslash,n and stays that way, and
-- trailing backslashes are trimmed (unrepresentable in 1.x, see the vectors).
local function stored(s)
  return (s:gsub("\n", "\\n"):gsub("\\+$", ""))
end

-- uint64 above int64 max is clamped (1.x has no 'u' suffix).
local function clamp_int(digits)
  if digits:sub(1, 1) ~= "-" and (#digits > 19 or (#digits == 19 and digits > INT64_MAX)) then
    return INT64_MAX
  end
  return digits
end

local PREC_NS = { ns = 1, u = 1000, ms = 1000000, s = 1000000000, m = 60000000000, h = 3600000000000 }

-- InfluxQL double-quoted identifier: backslash and quote escaped.
local function ident(s)
  return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
end

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The encoder's output, one entry per successfully encoded vector.
local emitted, emit_error = {}, nil
do
  local bin = stack.bin("test_lp")
  local rc, out, err = stack.run(stack.quote(bin) .. " --emit", { timeout = 60 })
  if rc ~= 0 then
    emit_error = "test_lp --emit failed (exit " .. rc .. ", binary " .. bin .. "): " .. err
  else
    for ln in out:gmatch("[^\n]+") do
      local id, prec, line = ln:match("^([^\t]+)\t([^\t]+)\t(.*)$")
      assert(id, "bad --emit line: " .. ln)
      emitted[#emitted + 1] = { id = id, prec = prec ~= "-" and prec or nil, line = percent_decode(line) }
    end
  end
end

-- The expected stored point for a vector: measurement, tags, fields, time.
local function expectation(v)
  local exp = { meas = stored(v.measurement), tags = {}, fields = {}, ints = {} }
  for k, val in pairs(v.tags or {}) do
    local sv = stored(val)
    if sv ~= "" then exp.tags[stored(k)] = sv end
  end
  for k, tv in pairs(v.fields) do
    local ty, val = tv[1], tv[2]
    local key = stored(k)
    if ty == "float" then
      if type(val) == "number" then exp.fields[key] = val end -- "NaN"/"+Inf" are dropped
    elseif ty == "int" or ty == "uint" then
      local digits = clamp_int(raw_int_field(v.id, k))
      exp.ints[key] = digits
      exp.fields[key] = tonumber(digits) + 0.0 -- what cjson will make of the answer
    else
      exp.fields[key] = val
    end
  end
  if v.ts == cjson.null then
    exp.recent = true
  else
    local ns = math.tointeger(tonumber(raw_ts_ns(v.id)))
    local unit = type(v.ts) == "table" and PREC_NS[v.ts.precision] or 1
    -- The encoder truncates to the unit; the server multiplies back.
    exp.time = tostring((ns // unit) * unit)
  end
  return exp
end

describe("line protocol round trip through a real influxd", function()
  local influx
  local seq = 0

  setup(function() influx = stack.influxd_start() end)
  teardown(function() stack.cleanup_all() end)

  it("test_lp --emit produces a line for every encode vector that expects one", function()
    assert.is_nil(emit_error, emit_error)
    local got = {}
    for _, e in ipairs(emitted) do got[e.id] = true end
    local n = 0
    for _, v in ipairs(vectors) do
      if v.kind == "encode" then
        n = n + 1
        if v.expect ~= cjson.null then
          assert.is_true(got[v.id] == true, "no line emitted for " .. v.id)
        else
          assert.is_nil(got[v.id], "an error vector was encoded: " .. v.id)
        end
      end
    end
    assert.is_true(n > 30, "only " .. n .. " encode vectors")
  end)

  -- Writes one line into a database of its own (the vectors reuse "cpu"
  -- with every field type, which one database would refuse as a conflict).
  local function write_fresh(e)
    seq = seq + 1
    local db = "lp_rt_" .. seq
    local _, st, body = stack.influx_query(influx.url, "CREATE DATABASE " .. ident(db))
    assert.are.equal(200, st, body)
    local status, resp = stack.influx_write(influx.url, db, e.line .. "\n", e.prec)
    assert.are.equal(204, status, "write refused: " .. tostring(resp) .. " line: " .. e.line)
    return db
  end

  local function only_series(db, meas)
    local res, st, body = stack.influx_query(influx.url,
      "SELECT * FROM " .. ident(meas) .. " GROUP BY *", db, { epoch = "ns" })
    assert.are.equal(200, st, body)
    local r = res and res.results and res.results[1]
    assert.is_table(r, body)
    assert.is_nil(r.error, body)
    assert.is_table(r.series, "no series for " .. meas .. ": " .. tostring(body))
    assert.are.equal(1, #r.series, body)
    assert.are.equal(1, #r.series[1].values, body)
    return r.series[1], body
  end

  for _, e in ipairs(emitted) do
    local v = by_id[e.id]
    if v then
      it("stores vector " .. e.id .. " as its input says", function()
        local exp = expectation(v)
        local db = write_fresh(e)

        local m = stack.influx_query(influx.url, "SHOW MEASUREMENTS", db)
        local names = stack.influx_rows(m)
        assert.are.equal(1, #names)
        assert.are.equal(exp.meas, names[1].name)

        local s, body = only_series(db, exp.meas)
        assert.are.equal(exp.meas, s.name)
        local tags = {}
        for k, val in pairs(s.tags or {}) do
          if val ~= "" then tags[k] = val end -- GROUP BY * lists absent tags as ""
        end
        assert.are.same(exp.tags, tags)

        local row = {}
        for i, col in ipairs(s.columns) do row[col] = s.values[1][i] end
        local t = row.time
        row.time = nil
        assert.are.same(exp.fields, row)
        -- Exact integers: the answer's text must carry every digit.
        for k, digits in pairs(exp.ints) do
          assert.truthy(body:find("[%[,]" .. digits:gsub("%-", "%%-") .. "[,%]]"),
            k .. " = " .. digits .. " not in " .. body)
        end
        if exp.recent then
          assert.is_true(math.abs(t / 1e9 - os.time()) < 600, "time not near now: " .. tostring(t))
        else
          assert.truthy(body:find("%[" .. exp.time:gsub("%-", "%%-") .. ","), "time " .. exp.time .. " not in " .. body)
        end
      end)
    elseif e.id:match("^fmt:") then
      it("stores the float " .. e.id:sub(5) .. " written as " .. e.line:match("value=(%S+)"), function()
        local text = e.id:sub(5)
        local want = assert(tonumber(text))
        -- Lua reads "-0" as the integer 0 and would lose the sign: force a float
        if math.type(want) == "integer" then want = tonumber(text .. ".0") end
        local db = write_fresh(e)
        local s = only_series(db, "fmt")
        local row = {}
        for i, col in ipairs(s.columns) do row[col] = s.values[1][i] end
        assert.are.equal(want, row.value)
        -- -0 keeps its sign through the server and its JSON
        assert.are.equal(1 / want, 1 / row.value)
      end)
    end
  end
end)
