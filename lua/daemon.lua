-- The daemon's decisions (Lua side): where the plan comes from (Traffic Ops,
-- or the last good copy on disk when Traffic Ops is down) and when daily
-- summaries run. The C daemon (src/daemon.c) calls start(), refresh() every
-- config_interval, summary_tick(now_s) every daily_summary_interval, and
-- summary_successes() for /metrics.
local tstats = require "tstats"

local D = {}
local client, state_file

local function mkdir_p(dir)
  -- state_dir is operator-controlled configuration; quote it for the shell.
  os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
end

function D.start()
  local cfg = tstats.config
  local to = require "to"
  local t = cfg.traffic_ops
  if t.insecure then tstats.warn("traffic_ops.insecure = true: TLS certificates of Traffic Ops are NOT verified") end
  local args = { url = t.url, user = t.user, password = t.password, insecure = t.insecure, timeout = t.timeout,
    ca_file = t.ca_file, ca_path = t.ca_path, client_cert = t.client_cert, client_key = t.client_key }
  -- A reload with the same Traffic Ops settings keeps the logged-in client
  -- (the session cookie lives in the C jar): no new login per SIGHUP.
  local key = {}
  for k, v in pairs(args) do key[#key + 1] = k .. "=" .. tostring(v) end
  table.sort(key)
  key = table.concat(key, "\0")
  local kept = rawget(tstats, "_to_session")
  if kept and kept.key == key then
    client = kept.client
  else
    client = to.new(args)
    rawset(tstats, "_to_session", { key = key, client = client })
  end
  D.client = client
  if cfg.collect.timeout * 2 > cfg.polling_interval then
    tstats.warn(("collect.timeout = %g s leaves no time for a second Traffic Monitor within polling_interval = %d s: "
      .. "a hung monitor can cost a timeslot (keep the timeout under half the interval)"):format(
      cfg.collect.timeout, cfg.polling_interval))
  end
  if cfg.state_dir and cfg.state_dir ~= "" then
    mkdir_p(cfg.state_dir)
    state_file = cfg.state_dir .. "/traffic_ops_last_good.json"
  end
end

-- Returns the plan (lua/plan.lua) or nil, err.
function D.refresh()
  local cfg = tstats.config
  local plan = require "plan"
  local servers, params, err
  servers, err = client:servers()
  if servers then params, err = client:parameters(cfg.traffic_ops.profile) end
  local data
  D.stale = false   -- `once` exits 3 when the plan came from the saved copy
  if servers and params then
    data = { servers = servers, params = params, time = tstats.now_ms() }
    if state_file then
      local ok, saved, serr = pcall(plan.save, state_file, data)
      if not ok or not saved then
        tstats.warn("could not save " .. state_file .. ": " .. tostring(ok and serr or saved))
      end
    end
  else
    local saved, lerr
    if state_file then saved, lerr = plan.load(state_file) end
    if not saved then
      -- a missing file is the first start; anything else is worth saying
      if lerr and not tostring(lerr):find("No such file", 1, true) then
        tstats.error("the last good Traffic Ops data cannot be used: " .. tostring(lerr))
        tstats.count("traffic_ops_last_good_unreadable")
      end
      return nil, err
    end
    tstats.warn(("Traffic Ops unavailable (%s); using the last good data saved at %s"):format(
      tostring(err), os.date("!%Y-%m-%dT%H:%M:%SZ", (saved.time or 0) // 1000)))
    data = saved
    D.stale = true
  end
  local p = plan.build(data.servers, data.params, cfg)
  for _, w in ipairs(p.warnings or {}) do tstats.warn(w) end
  local n = 0
  for _ in pairs(p.cdns or {}) do n = n + 1 end
  tstats.info(("plan: %d endpoints on %d CDNs"):format(#p.endpoints, n))
  return p
end

local summary_warned
function D.summary_tick(now_s)
  local cfg = tstats.config
  if not cfg.summary.enabled then return end
  local ok, summary = pcall(require, "summary")
  if not ok then
    if not summary_warned then tstats.error("daily summaries unavailable: " .. tostring(summary)) end
    summary_warned = true
    return
  end
  return summary.tick(now_s)
end

-- { [cdn] = unix_s } of each CDN's last stored daily summary (this state dir's record,
-- so it survives a restart); the C daemon hands it to /metrics after start and each tick.
function D.summary_successes()
  local ok, st = pcall(require, "summary_state")
  if not ok then return {} end
  return st.load()
end

return D
