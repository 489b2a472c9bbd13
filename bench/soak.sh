#!/usr/bin/env bash
# Soak test (not in CI): `tollgate demo` under mixed PostgreSQL (pgbench, writer, select by id)
# and Redis (redis-benchmark, writer, SET/GET on cache:*) load for DURATION seconds, with a
# policy reload through the admin API every RELOAD_EVERY seconds. Every SAMPLE seconds it
# records the gateway's RSS; at the end it prints RSS over time, errors, reload results and
# p50/p99 latencies. See docs/reliability.md.
#
#   DURATION=1800 bench/soak.sh            # the documented 30-minute run
#   TOLLGATE_BIN=target/release/tollgate   # default: target/release/tollgate, else debug
#
# Loopback only; every loop is bounded by DURATION; everything started is stopped at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=${DURATION:-1800}
RELOAD_EVERY=${RELOAD_EVERY:-5}
SAMPLE=${SAMPLE:-30}
CLIENTS=${CLIENTS:-8}
bin=${TOLLGATE_BIN:-$here/target/release/tollgate}
[ -x "$bin" ] || bin="$here/target/debug/tollgate"
out=$(mktemp -d /tmp/tollgate-soak.XXXXXX)
echo "soak: $DURATION s, binary $bin, output in $out"

"$bin" demo --env-file "$out/demo.env" > "$out/demo.log" 2>&1 &
demo=$!
cleanup() { kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 120); do [ -s "$out/demo.env" ] && break; sleep 0.5; done
[ -s "$out/demo.env" ] || { echo "demo did not start"; cat "$out/demo.log"; exit 1; }
set -a; . "$out/demo.env"; set +a

rss() { awk '/VmRSS/ {print $2}' "/proc/$demo/status"; }
echo "seconds,rss_kib" > "$out/rss.csv"
echo "0,$(rss)" >> "$out/rss.csv"

cat > "$out/select.sql" <<'SQL'
\set id random(1, 20000)
SELECT id, customer_id, amount FROM orders WHERE id = :id;
SQL
pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" -f "$out/select.sql" -l --log-prefix="$out/pgbench" \
  "$TOLLGATE_PG_WRITER_URL" > "$out/pgbench.txt" 2>&1 &
pgb=$!

redis_user=writer
redis_pass=$(sed -E 's|redis://[^:]+:([^@]+)@.*|\1|' <<<"$TOLLGATE_REDIS_WRITER_URL")
redis_port=$(sed -E 's|.*:([0-9]+)/?$|\1|' <<<"$TOLLGATE_REDIS_WRITER_URL")
(
  end=$((SECONDS + DURATION))
  while [ $SECONDS -lt $end ]; do
    redis-benchmark -h 127.0.0.1 -p "$redis_port" --user "$redis_user" -a "$redis_pass" \
      -c 4 -n 20000 -r 10000 --csv SET cache:soak:__rand_int__ v 2>&1 | tail -n +2
    redis-benchmark -h 127.0.0.1 -p "$redis_port" --user "$redis_user" -a "$redis_pass" \
      -c 4 -n 20000 -r 10000 --csv GET cache:soak:__rand_int__ 2>&1 | tail -n +2
  done
) > "$out/redis.csv" 2>&1 &
rb=$!

reload_ok=0; reload_err=0; t=0
while kill -0 "$pgb" 2>/dev/null && [ $t -lt "$DURATION" ]; do
  sleep "$RELOAD_EVERY"; t=$((t + RELOAD_EVERY))
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $TOLLGATE_ADMIN_TOKEN" "$TOLLGATE_ADMIN_URL/api/v1/reload" || true)
  if [ "$code" = 200 ]; then reload_ok=$((reload_ok + 1)); else reload_err=$((reload_err + 1)); fi
  if [ $((t % SAMPLE)) -lt "$RELOAD_EVERY" ]; then echo "$t,$(rss)" >> "$out/rss.csv"; fi
done
wait "$pgb" || true
kill "$rb" 2>/dev/null || true; wait "$rb" 2>/dev/null || true
echo "$DURATION,$(rss)" >> "$out/rss.csv"

echo "== RSS over time (KiB)"; cat "$out/rss.csv"
echo "== reloads: $reload_ok ok, $reload_err failed"
echo "== pgbench"; grep -E "transactions actually processed|failed transactions|latency average|tps" "$out/pgbench.txt" || cat "$out/pgbench.txt"
# Per-transaction log: field 3 is the latency in microseconds.
cat "$out"/pgbench.* 2>/dev/null | awk '{print $3}' | sort -n > "$out/lat.txt" || true
n=$(wc -l < "$out/lat.txt")
if [ "$n" -gt 0 ]; then
  p50=$(sed -n "$((n / 2 + 1))p" "$out/lat.txt"); p99=$(sed -n "$((n * 99 / 100 + 1))p" "$out/lat.txt")
  echo "pgbench latency over $n transactions: p50 ${p50} us, p99 ${p99} us"
fi
echo "== redis-benchmark (test, rps, avg, min, p50, p95, p99, max ms)"
grep -v '^"test"' "$out/redis.csv" | awk -F, '{t[$1]=$0; n[$1]++} END {for (k in t) print n[k] " runs, last: " t[k]}'
echo "== redis errors: $(grep -ci 'err' "$out/redis.csv" || true)"
echo "== gateway errors in the log: $(grep -c ' ERROR ' "$out/demo.log" || true)"
