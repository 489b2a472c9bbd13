#!/usr/bin/env bash
# GATEWAY_CMD for ../shared/bench/anchors.sh: tollgate in front of the anchors' own PostgreSQL
# and Redis, with restricted policies (parse/lookup, decision and audit on every statement or
# command), not passthrough.
#
#   GATEWAY_NAME=tollgate GATEWAY_CMD="$PWD/bench/gateway-cmd.sh" ../shared/bench/anchors.sh
#
# Uses target/release/tollgate (build it first: cargo build --release). For more than one
# tollgate column in one run see bench/columns.sh, which sets these (all optional):
#   TOLLGATE_BIN          the binary (default target/release/tollgate)
#   TOLLGATE_SUBDIR       its directory under $BENCH_TMPDIR (default tollgate)
#   TOLLGATE_PG_PORT, TOLLGATE_REDIS_PORT   fixed listener ports (default: free ones)
#   TOLLGATE_AGENTS_FILE, TOLLGATE_TOKEN    an agents file made beforehand and its token
#   TOLLGATE_EXTRA_CONFIG lines appended to tollgate.toml (new tables only)
#   TOLLGATE_PG_UPSTREAM_EXTRA  lines added to the PostgreSQL upstream's table (e.g. pooling)
#   TOLLGATE_REDIS_UPSTREAM_EXTRA  lines added to the Redis upstream's table (e.g.
#                         shared_connections = 0)
#   TOLLGATE_NO_ENV=1     do not write $BENCH_GATEWAY_ENV (an extra column, not the main one)
#   TOLLGATE_SERVE_PREFIX a command to run `serve` under (bench/callgrind.sh: valgrind)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TOLLGATE_BIN:-$here/target/release/tollgate}"
dir="$BENCH_TMPDIR/${TOLLGATE_SUBDIR:-tollgate}"
mkdir -p "$dir/policies"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=${TOLLGATE_PG_PORT:-$(free_port)}
rport=${TOLLGATE_REDIS_PORT:-$(free_port)}

cat > "$dir/tollgate.toml" <<TOML
agents_file = "agents.toml"
policies_dir = "policies"
[listen]
postgres = "127.0.0.1:$port"
redis = "127.0.0.1:$rport"
[vault]
file = "vault.json"
key_file = "master.key"
[audit]
file = "audit.log"
[upstream.$BENCH_PG_DB]
kind = "postgres"
host = "$BENCH_PG_HOST"
port = $BENCH_PG_PORT
user = "vault:bench_user"
password = "vault:bench_password"
${TOLLGATE_PG_UPSTREAM_EXTRA:-}
[upstream.bench_redis]
kind = "redis"
host = "$BENCH_REDIS_HOST"
port = $BENCH_REDIS_PORT
user = "default"
password = "vault:bench_redis_password"
${TOLLGATE_REDIS_UPSTREAM_EXTRA:-}
${TOLLGATE_EXTRA_CONFIG:-}
TOML

cat > "$dir/policies/bench.toml" <<TOML
agents = ["bench"]
[[postgres]]
upstream = "$BENCH_PG_DB"
[[postgres.table]]
name = "public.pgbench_*"
allow = ["select", "insert", "update"]
# redis-benchmark -t set,get uses the key "key:__rand_int__"; anchors.sh probes anchors:probe:N.
[[redis]]
upstream = "bench_redis"
commands = ["get", "set", "ping"]
read_keys = ["key:*", "anchors:*"]
write_keys = ["key:*", "anchors:*"]
TOML

python3 -c 'import secrets; print(secrets.token_hex(32))' > "$dir/master.key"
chmod 600 "$dir/master.key"
printf '%s' "$BENCH_PG_USER" | "$bin" vault --config "$dir/tollgate.toml" set bench_user 2>/dev/null
printf '%s' "$BENCH_PG_PASSWORD" | "$bin" vault --config "$dir/tollgate.toml" set bench_password 2>/dev/null
printf '%s' "$BENCH_REDIS_PASSWORD" | "$bin" vault --config "$dir/tollgate.toml" set bench_redis_password 2>/dev/null
if [[ -n ${TOLLGATE_AGENTS_FILE:-} ]]; then
  cp "$TOLLGATE_AGENTS_FILE" "$dir/agents.toml"
  token=$TOLLGATE_TOKEN
else
  token=$("$bin" agent add bench --config "$dir/tollgate.toml" 2>/dev/null)
fi

# shellcheck disable=SC2086 # the prefix is a command line
RUST_LOG=warn ${TOLLGATE_SERVE_PREFIX:-} "$bin" serve --config "$dir/tollgate.toml" &
pid=$!
for _ in $(seq 1 600); do
  if (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$rport) 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z ${TOLLGATE_NO_ENV:-} ]]; then
  printf 'GATEWAY_PG_URL=postgresql://bench:%s@127.0.0.1:%s/%s?sslmode=disable\n' "$token" "$port" "$BENCH_PG_DB" > "$BENCH_GATEWAY_ENV.tmp"
  printf 'GATEWAY_REDIS_URL=redis://bench:%s@127.0.0.1:%s\n' "$token" "$rport" >> "$BENCH_GATEWAY_ENV.tmp"
  mv "$BENCH_GATEWAY_ENV.tmp" "$BENCH_GATEWAY_ENV"
fi
wait $pid
