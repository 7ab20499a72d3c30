#!/usr/bin/env bash
# influxd.sh: start/stop a private InfluxDB 1.6.7 for tests and local runs.
# Set-up side of the project (shell only). All data lives under DIR; both the
# HTTP and the RPC port move to loopback ports verified free before start.
#   influxd.sh start DIR [--auth USER:PASS]   prints the URL; writes DIR/{url,http_port,rpc_port,pid}
#   influxd.sh stop DIR
# Env: TS_INFLUX_PORT / TS_INFLUX_RPC_PORT force ports (refused if taken);
#      TS_INFLUX_WAIT seconds to wait for /ping (default 30);
#      TS_INFLUX_MAX_BODY write body limit in bytes (default 25000000, influxd's; larger -> HTTP 413);
#      TS_INFLUX_DATA_CONF more [data] lines, ';'-separated (e.g. 'wal-fsync-delay = "100ms"'): the
#      benchmark's influxd only (scripts/bench --influx-load-runs); unset, the config is the tests'.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/ports.sh"

die() { echo "influxd.sh: $*" >&2; exit 1; }

write_conf() { # DIR HTTP_PORT RPC_PORT AUTH(true|false)
  cat >"$1/influxdb.conf" <<CONF
reporting-enabled = false
bind-address = "127.0.0.1:$3"
[meta]
  dir = "$1/meta"
[data]
  dir = "$1/data"
  wal-dir = "$1/wal"
  query-log-enabled = false
  max-series-per-database = ${TS_INFLUX_MAX_SERIES:-1000000}
$(tr ';' '\n' <<<"${TS_INFLUX_DATA_CONF:-}" | sed 's/^ */  /')
[monitor]
  store-enabled = false
[continuous_queries]
  run-interval = "1s"
[http]
  enabled = true
  bind-address = "127.0.0.1:$2"
  auth-enabled = $4
  max-body-size = ${TS_INFLUX_MAX_BODY:-25000000}
  log-enabled = false
CONF
}

# try_start DIR HTTP RPC AUTH: 0 when ready, 2 when influxd died (e.g. lost a
# bind race), 1 on timeout (process killed).
try_start() {
  local dir=$1 http=$2 rpc=$3 auth=$4 pid waited=0 limit code
  write_conf "$dir" "$http" "$rpc" "$auth"
  : >"$dir/influxd.log"
  # setsid: a Ctrl-C in the caller's terminal is not the way this dies; stop is.
  setsid influxd run -config "$dir/influxdb.conf" </dev/null >>"$dir/influxd.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  limit=$(( ${TS_INFLUX_WAIT:-30} * 20 ))
  while [ $waited -lt $limit ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 2
    fi
    # /ping alone could be answered by someone else's influxd that grabbed the
    # port after our check; our own log saying it listens on it settles that.
    if grep -q "Listening on HTTP.*127.0.0.1:$http" "$dir/influxd.log" 2>/dev/null; then
      code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$http/ping" || true)
      [ "$code" = 204 ] && return 0
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  kill -TERM "$pid" 2>/dev/null || true
  sleep 1
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

cmd_start() {
  local dir=${1:-} auth_spec="" auth=false http rpc attempt rc user pass
  [ -n "$dir" ] || die "usage: influxd.sh start DIR [--auth USER:PASS]"
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --auth) auth_spec=${2:-}; shift 2 || die "--auth needs USER:PASS" ;;
      *) die "unknown option $1" ;;
    esac
  done
  if [ -n "$auth_spec" ]; then
    case $auth_spec in *:*) ;; *) die "--auth wants USER:PASS" ;; esac
    auth=true
    user=${auth_spec%%:*}; pass=${auth_spec#*:}
  fi
  command -v influxd >/dev/null || die "influxd not installed (run scripts/deps)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    die "an influxd (pid $(cat "$dir/pid")) already runs from $dir"
  fi
  mkdir -p "$dir/meta" "$dir/data" "$dir/wal"

  for attempt in 1 2 3 4 5; do
    if [ -n "${TS_INFLUX_PORT:-}" ]; then
      http=$TS_INFLUX_PORT
      ts_port_taken "$http" && die "port $http (TS_INFLUX_PORT) is already taken"
    else
      http=$(ts_free_port 2)
    fi
    if [ -n "${TS_INFLUX_RPC_PORT:-}" ]; then
      rpc=$TS_INFLUX_RPC_PORT
      ts_port_taken "$rpc" && die "port $rpc (TS_INFLUX_RPC_PORT) is already taken"
    elif [ -n "${TS_INFLUX_PORT:-}" ]; then
      rpc=$(ts_free_port 1)
    else
      rpc=$((http + 1))
    fi
    [ "$rpc" != "$http" ] || die "HTTP and RPC port are both $http"
    rc=0
    try_start "$dir" "$http" "$rpc" "$auth" || rc=$?
    [ $rc = 0 ] && break
    if [ $rc = 1 ]; then
      echo "influxd.sh: no /ping 204 from 127.0.0.1:$http within ${TS_INFLUX_WAIT:-30}s; log tail:" >&2
      tail -n 20 "$dir/influxd.log" >&2
      rm -f "$dir/pid"
      exit 1
    fi
    # The process died: a port race is worth another try with new ports,
    # anything else (or a forced port) is not.
    if [ -n "${TS_INFLUX_PORT:-}${TS_INFLUX_RPC_PORT:-}" ] ||
       ! grep -qi "address already in use" "$dir/influxd.log"; then
      echo "influxd.sh: influxd exited during start; log tail:" >&2
      tail -n 20 "$dir/influxd.log" >&2
      rm -f "$dir/pid"
      exit 1
    fi
  done
  [ $rc = 0 ] || { rm -f "$dir/pid"; die "gave up after $attempt port races"; }

  echo "$http" >"$dir/http_port"
  echo "$rpc" >"$dir/rpc_port"
  echo "http://127.0.0.1:$http" >"$dir/url"
  if [ "$auth" = true ]; then
    # The first admin may be created without credentials (InfluxDB 1.x rule).
    local q code
    q="CREATE USER \"${user//\"/\\\"}\" WITH PASSWORD '${pass//\'/\\\'}' WITH ALL PRIVILEGES"
    code=$(curl -s -o "$dir/create_user.out" -m 10 -w '%{http_code}' -XPOST \
      "http://127.0.0.1:$http/query" --data-urlencode "q=$q" || true)
    if [ "$code" != 200 ] || grep -q '"error"' "$dir/create_user.out"; then
      echo "influxd.sh: creating admin user failed (HTTP $code): $(cat "$dir/create_user.out")" >&2
      cmd_stop "$dir"
      exit 1
    fi
    echo "$user" >"$dir/user"
  fi
  echo "http://127.0.0.1:$http"
}

cmd_stop() {
  local dir=${1:-} pid i
  [ -n "$dir" ] || die "usage: influxd.sh stop DIR"
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "influxd.sh: pid $pid ignored SIGTERM for 15s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/pid"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) die "usage: influxd.sh start DIR [--auth USER:PASS] | stop DIR" ;;
esac
