-- tstats default configuration (Lua). It is compiled into the binary and
-- used when no --config is given: it points at a local InfluxDB, the project's
-- simulator as Traffic Ops, and a local PostgreSQL, each overridable from the
-- environment (scripts/demo sets these). Copy it to start a real config;
-- every key, its type and default: `tstats check`, README "Configuration".
return {
  log = { level = env("TSTATS_LOG_LEVEL", "info") },

  traffic_ops = {
    url = env("TSTATS_TO_URL", "http://127.0.0.1:6443"),
    user = env("TO_USER", "admin"),
    password = env("TO_PASSWORD", "twelve12"),
    insecure = false,
    timeout = 10,
  },

  influxdb = {
    urls = { env("TSTATS_INFLUX_URL", "http://127.0.0.1:8086") },
    user = env("INFLUX_USER"),
    password = env("INFLUX_PASSWORD"),
  },

  polling_interval = 10,
  publishing_interval = 30,
  state_dir = env("TSTATS_STATE_DIR", "/var/lib/tstats"),

  -- /metrics, /health and the status page: off unless TSTATS_HTTP_LISTEN is set
  http = { listen = env("TSTATS_HTTP_LISTEN") },

  summary = {
    sinks = env("TSTATS_PG_CONNINFO") and { "pg" } or {},
  },
  postgres = { conninfo = env("TSTATS_PG_CONNINFO") },
}
