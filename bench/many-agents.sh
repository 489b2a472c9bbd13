#!/usr/bin/env bash
# 1,000 agent connections, each idle most of the time, over the demo's 10-connection
# transaction pool (the writer agent), beside PgBouncer in transaction mode with the same pool
# size on the same PostgreSQL. Reports statements/s, latency, the server connections each used
# and the gateway's memory. Not part of the test suite; run on a quiet machine:
#
#   cargo build --release && bench/many-agents.sh [CLIENTS=1000] [SECONDS=20] [SLEEP_MS=100]
#
# Each client runs: sleep SLEEP_MS, then SELECT one order by id (pgbench -c CLIENTS -j 2).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin=${TOLLGATE_BIN:-$here/target/release/tollgate}
clients=${CLIENTS:-1000}; secs=${SECONDS_RUN:-${SECONDS_:-20}}; sleep_ms=${SLEEP_MS:-100}
[[ $# -ge 1 ]] && clients=$1; [[ $# -ge 2 ]] && secs=$2; [[ $# -ge 3 ]] && sleep_ms=$3
command -v pgbouncer >/dev/null || { echo "missing pgbouncer (apt-get install pgbouncer)" >&2; exit 1; }
ulimit -n $((clients * 4 + 1024))
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  [[ -f $work/pgb.pid ]] && kill "$(cat "$work/pgb.pid")" 2>/dev/null || true
  [[ -n ${demo:-} ]] && kill -INT "$demo" 2>/dev/null && wait "$demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" demo --env-file "$work/demo.env" >"$work/demo.log" 2>&1 &
demo=$!
for _ in $(seq 1 240); do grep -q TOLLGATE_CA_FILE "$work/demo.env" 2>/dev/null && break; sleep 0.5; done
set -a; . "$work/demo.env"; set +a
up=$TOLLGATE_UPSTREAM_PG_URL
upass=$(sed 's|.*://postgres:\([^@]*\)@.*|\1|' <<<"$up"); uport=$(sed 's|.*:\([0-9]*\)/shop.*|\1|' <<<"$up")
bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/pgb.ini" <<INI
[databases]
shop = host=127.0.0.1 port=$uport dbname=shop user=postgres password=$upass
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = plain
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 10
max_client_conn = $((clients + 100))
logfile = $work/pgb.log
pidfile = $work/pgb.pid
INI
printf '"postgres" "%s"\n' "$upass" >"$work/users.txt"
chown -R postgres: "$work/pgb.ini" "$work/users.txt"; touch "$work/pgb.log"; chown postgres: "$work/pgb.log" "$work"
runuser -u postgres -- sh -c "ulimit -n $((clients * 2 + 1024)); pgbouncer -d $work/pgb.ini"
sleep 0.5
printf '\\sleep %s ms\n\\set id random(1, 50000)\nSELECT amount FROM orders WHERE id = :id;\n' "$sleep_ms" >"$work/idle.sql"
gw=$(pgrep -f "$bin demo --env-file $work/demo.env" | head -1)
server_conns() { psql "$up" -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename <> 'postgres'" 2>/dev/null; }
bouncer_conns() { psql "$up" -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = 'postgres' AND pid <> pg_backend_pid()" 2>/dev/null; }
run() { # name url
  local out peak=0 n rss
  pgbench -n -f "$work/idle.sql" -c "$clients" -j 2 -T "$secs" "$2" >"$work/$1.out" 2>&1 &
  local pb=$!
  while kill -0 $pb 2>/dev/null; do
    if [[ $1 == tollgate ]]; then n=$(server_conns); else n=$(bouncer_conns); fi
    (( ${n:-0} > peak )) && peak=$n
    sleep 2
  done
  wait $pb || true
  rss=$([[ $1 == tollgate ]] && awk '/VmHWM/{print $2" KiB peak RSS"}' "/proc/$gw/status" || echo "")
  printf '%-9s %s; %s; %s; server connections seen: %s %s\n' "$1" \
    "$(grep -E '^number of transactions actually' "$work/$1.out" | sed 's/.*: //') statements" \
    "$(grep -E '^tps' "$work/$1.out" | sed 's/ (without.*//')" \
    "$(grep -E '^latency average' "$work/$1.out")" "$peak" "$rss"
  grep -E "^(pgbench: error|.*FATAL)" "$work/$1.out" | sort | uniq -c | head -3 || true
}
echo "$clients clients, each: sleep ${sleep_ms} ms, SELECT by id; ${secs} s; pool of 10 server connections (transaction mode)"
run tollgate "$TOLLGATE_PG_WRITER_URL"
run pgbouncer "postgresql://postgres:$upass@127.0.0.1:$bport/shop?sslmode=disable"
