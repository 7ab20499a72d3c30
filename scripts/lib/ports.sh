# ports.sh: shell helpers (sourced, not run) to pick loopback TCP ports that are free.
# Set-up side of the project (no C, no Lua). Used by influxd.sh and pg.sh.
# A port is free when nothing listens on it in any address family (ss -ltn);
# we never probe with a request, because another server would answer it.

# ts_port_taken PORT: true (0) when something listens on PORT.
ts_port_taken() {
  [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
}

# ts_free_port [COUNT]: print a port P such that P..P+COUNT-1 are all free.
# Ports come from 20000-32000, below Linux's ephemeral range (32768+), so
# outgoing connections never take them between the check and the bind.
ts_free_port() {
  local count=${1:-1} tries=0 p i ok
  while [ $tries -lt 200 ]; do
    tries=$((tries + 1))
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    ok=1
    for ((i = 0; i < count; i++)); do
      if ts_port_taken $((p + i)); then ok=0; break; fi
    done
    if [ $ok = 1 ]; then echo "$p"; return 0; fi
  done
  echo "ts_free_port: no free port found after $tries tries" >&2
  return 1
}
