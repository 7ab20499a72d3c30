#!/usr/bin/env bash
# pg.sh: start/stop a private PostgreSQL 15 cluster holding Traffic Ops' stats_summary table.
# Set-up side of the project (shell only). Host logins use scram-sha-256, so a wrong
# password is really refused; the cluster listens on 127.0.0.1 on a port verified free.
#   pg.sh start DIR      prints the conninfo; writes DIR/{port,password,conninfo}
#   pg.sh stop DIR
#   pg.sh psql DIR SQL   runs SQL as tstats over TCP, unaligned tuples-only output
# Env: TS_PG_PORT forces the port (refused if taken).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/ports.sh"
PGBIN=${TS_PGBIN:-/usr/lib/postgresql/15/bin}

die() { echo "pg.sh: $*" >&2; exit 1; }

# as_pg CMD...: initdb/postgres refuse root; run as the postgres user from /,
# because our cwd may not be readable by it.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

cmd_start() {
  local dir=${1:-} port pass sql attempt rc
  [ -n "$dir" ] || die "usage: pg.sh start DIR"
  [ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb missing (run scripts/deps)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/data/postmaster.pid" ] && die "a cluster already runs from $dir (pg.sh stop $dir)"
  # mktemp dirs are 0700: every ancestor must be traversable by postgres.
  local p=$dir
  while [ "$p" != / ]; do
    if [ "$(id -u)" = 0 ] && [ "$(stat -c %U "$p")" = root ]; then chmod o+x "$p"; fi
    p=$(dirname "$p")
  done
  chmod 755 "$dir"
  rm -rf "$dir/data" "$dir/sock"
  mkdir -p "$dir/sock"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/sock" "$dir"

  pass=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The superuser password only exists to satisfy --pwfile; local socket logins use trust.
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/su.pw"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/su.pw"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$dir/su.pw" -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
    { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$dir/su.pw"

  for attempt in 1 2 3 4 5; do
    if [ -n "${TS_PG_PORT:-}" ]; then
      port=$TS_PG_PORT
      ts_port_taken "$port" && die "port $port (TS_PG_PORT) is already taken"
    else
      port=$(ts_free_port 1)
    fi
    rc=0
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
      start >"$dir/pg_ctl.log" 2>&1 || rc=$?
    [ $rc = 0 ] && break
    # Lost a bind race: try another port, unless the port was forced.
    if [ -z "${TS_PG_PORT:-}" ] && grep -qi "could not bind\|address already in use" "$dir/postgres.log"; then
      continue
    fi
    tail -n 20 "$dir/postgres.log" >&2
    die "pg_ctl start failed"
  done
  [ $rc = 0 ] || die "gave up after $attempt port races"
  echo "$port" >"$dir/port"

  local su=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres)
  as_pg "${su[@]}" -d postgres \
    -c "CREATE ROLE tstats LOGIN PASSWORD '$pass'" \
    -c "CREATE DATABASE traffic_ops OWNER tstats" >"$dir/setup.log" 2>&1 ||
    { cat "$dir/setup.log" >&2; cmd_stop "$dir"; die "creating role/database failed"; }
  echo "$pass" >"$dir/password"
  chmod 600 "$dir/password"
  echo "postgresql://tstats:$pass@127.0.0.1:$port/traffic_ops" >"$dir/conninfo"
  # Load the schema as tstats over TCP: the table belongs to the role tstats uses.
  PGPASSWORD=$pass "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U tstats \
    -d traffic_ops -f "$root/spec/sql/stats_summary.sql" >>"$dir/setup.log" 2>&1 ||
    { cat "$dir/setup.log" >&2; cmd_stop "$dir"; die "loading stats_summary.sql failed"; }
  cat "$dir/conninfo"
}

cmd_stop() {
  local dir=${1:-}
  [ -n "$dir" ] || die "usage: pg.sh stop DIR"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
}

cmd_psql() {
  local dir=${1:-} sql=${2:-}
  [ -n "$dir" ] && [ -n "$sql" ] || die "usage: pg.sh psql DIR SQL"
  PGPASSWORD=$(cat "$dir/password") "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$(cat "$dir/port")" -U tstats -d traffic_ops -c "$sql"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  psql) shift; cmd_psql "$@" ;;
  *) die "usage: pg.sh start DIR | stop DIR | psql DIR SQL" ;;
esac
