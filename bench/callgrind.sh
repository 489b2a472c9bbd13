#!/usr/bin/env bash
# Instructions per statement on tollgate's statement path, counted by callgrind. The count is
# deterministic (same binary, same load: same number, whatever else the machine does), so a
# change of a few percent in user-space cost shows here where wall-clock runs show only noise.
#
#   bench/callgrind.sh [BIN...]          # default: target/release/tollgate
#   CALLGRIND_KEEP=DIR bench/callgrind.sh ...   # also keep the dumps (DIR/N.pg, DIR/N.redis)
#   REDIS_PIPELINE=1 bench/callgrind.sh ...     # redis-benchmark -P 1 instead of -P 16
#
# Starts `tollgate demo` for its PostgreSQL and Redis, then, for each binary, the bench gateway
# (bench/gateway-cmd.sh: restricted policy, audit on) under callgrind. After a warm-up it counts
# `pgbench -S -M extended` (4 clients, 1,000 transactions each) and `redis-benchmark -t get
# -P 16` (4 clients, 16,000 requests), and prints instructions per statement and per command.
# valgrind has no SHA-NI, so the audit chain's SHA-256 runs in software there: it is shown
# apart ("sha"), and "other" (everything else) is the number to compare.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (Debian package valgrind)" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "callgrind.sh: needs callgrind_control (valgrind)" >&2; exit 1; }
[ $# -gt 0 ] || set -- "$here/target/release/tollgate"
work=$(mktemp -d)
demo_pid=""
cleanup() {
  pkill -f "callgrind.*--callgrind-out-file=$work" 2>/dev/null || true
  [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
"$1" demo --env-file "$work/demo.env" > "$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 1 600); do [ -s "$work/demo.env" ] && break; sleep 0.2; done
[ -s "$work/demo.env" ] || { echo "callgrind.sh: the demo did not start (see $work/demo.log)" >&2; cat "$work/demo.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/demo.env"
pg=$TOLLGATE_UPSTREAM_PG_URL
export BENCH_PG_HOST=127.0.0.1 BENCH_PG_DB=shop BENCH_PG_USER=postgres
BENCH_PG_PORT=$(sed 's|.*:\([0-9]*\)/shop.*|\1|' <<<"$pg")
BENCH_PG_PASSWORD=$(sed 's|.*postgres:\([^@]*\)@.*|\1|' <<<"$pg")
BENCH_REDIS_HOST=127.0.0.1
BENCH_REDIS_PORT=$(sed 's|.*:\([0-9]*\)$|\1|' <<<"$TOLLGATE_UPSTREAM_REDIS_URL")
BENCH_REDIS_PASSWORD=$(sed 's|.*default:\([^@]*\)@.*|\1|' <<<"$TOLLGATE_UPSTREAM_REDIS_URL")
export BENCH_PG_PORT BENCH_PG_PASSWORD BENCH_REDIS_HOST BENCH_REDIS_PORT BENCH_REDIS_PASSWORD
pgbench -i -q -s 1 "$pg" > /dev/null 2>&1

# Self cost per unit from a callgrind dump: all of it, the software SHA-256, the rest.
per_unit() {
  callgrind_annotate --threshold=100 --auto=no "$1" 2>/dev/null | python3 -c '
import re, sys
units = float(sys.argv[1]); total = sha = 0
for line in sys.stdin:
    m = re.match(r"^\s*([\d,]+) \(", line)
    if not m:
        continue
    v = int(m.group(1).replace(",", ""))
    if "PROGRAM TOTALS" in line:
        total = v
    elif "compress256" in line:
        sha += v
print(f"{(total - sha) / units:8.0f} other  {sha / units:8.0f} sha")
' "$2"
}

n=0
for bin in "$@"; do
  n=$((n + 1))
  out="$work/cg$n"
  export BENCH_TMPDIR="$work" BENCH_GATEWAY_ENV="$work/gw$n.env"
  TOLLGATE_BIN="$bin" TOLLGATE_SUBDIR="gw$n" \
    TOLLGATE_SERVE_PREFIX="valgrind --tool=callgrind --callgrind-out-file=$out.%p" \
    "$here/bench/gateway-cmd.sh" > "$work/gw$n.log" 2>&1 &
  gw_pid=$!
  for _ in $(seq 1 900); do [ -s "$BENCH_GATEWAY_ENV" ] && break; sleep 0.2; done
  [ -s "$BENCH_GATEWAY_ENV" ] || { echo "callgrind.sh: $bin did not start" >&2; cat "$work/gw$n.log" >&2; exit 1; }
  # shellcheck disable=SC1090
  . "$BENCH_GATEWAY_ENV"
  token=$(sed 's|redis://bench:\([^@]*\)@.*|\1|' <<<"$GATEWAY_REDIS_URL")
  rport=${GATEWAY_REDIS_URL##*:}
  pid=$(pgrep -f "callgrind-out-file=$out" | head -1)
  rb() { redis-benchmark -h 127.0.0.1 -p "$rport" --user bench -a "$token" -c 4 -P "${REDIS_PIPELINE:-16}" -t get -r 100000 -q "$@" > /dev/null 2>&1; }
  pgbench -n -S -M extended -c 1 -t 300 "$GATEWAY_PG_URL" > /dev/null
  rb -n 2000
  callgrind_control -z "$pid" > /dev/null 2>&1
  pgbench -n -S -M extended -c 4 -j 2 -t 1000 "$GATEWAY_PG_URL" > /dev/null
  callgrind_control -d pg "$pid" > /dev/null 2>&1
  callgrind_control -z "$pid" > /dev/null 2>&1
  rb -n 16000
  callgrind_control -d redis "$pid" > /dev/null 2>&1
  echo "$bin"
  echo "  PostgreSQL, per statement (pgbench -S -M extended): $(per_unit "$(ls "$out".*.1)" 4000)"
  echo "  Redis, per command (GET -P ${REDIS_PIPELINE:-16}):                      $(per_unit "$(ls "$out".*.2)" 16000)"
  if [ -n "${CALLGRIND_KEEP:-}" ]; then
    mkdir -p "$CALLGRIND_KEEP"
    cp "$(ls "$out".*.1)" "$CALLGRIND_KEEP/$n.pg"
    cp "$(ls "$out".*.2)" "$CALLGRIND_KEEP/$n.redis"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
done
