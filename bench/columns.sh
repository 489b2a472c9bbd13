#!/usr/bin/env bash
# Several tollgate columns in one run of ../shared/bench/anchors.sh, so that two builds (before
# and after a change) or two configurations are measured side by side against the same
# upstreams, rounds interleaved:
#
#   bench/columns.sh base=/work/tollgate-base new=target/release/tollgate > report.txt
#   bench/columns.sh new=target/release/tollgate pooled=target/release/tollgate@bench/pool.env
#
# Each argument is NAME=BINARY[@ENVFILE]; ENVFILE (optional) is sourced before that column's
# gateway starts, e.g. to set TOLLGATE_PG_UPSTREAM_EXTRA or TOLLGATE_EXTRA_CONFIG for
# bench/gateway-cmd.sh. The first column is anchors.sh's GATEWAY column; the others are started
# by the same command on ports chosen here and named to anchors.sh as EXTRA_*_TARGETS. All use
# one agents file and token, made here. Other environment (ROUNDS, BENCH_SECONDS, ...) passes
# through to anchors.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 NAME=BINARY[@ENVFILE] ..." >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first_bin=${1#*=}; first_bin=${first_bin%%@*}
cat > "$work/tollgate.toml" <<TOML
agents_file = "agents.toml"
policies_dir = "policies"
[listen]
postgres = "127.0.0.1:0"
[vault]
file = "vault.json"
[audit]
file = "audit.log"
TOML
mkdir -p "$work/policies"
token=$("$first_bin" agent add bench --config "$work/tollgate.toml" 2>/dev/null)
agents="$work/agents.toml"

cmd=""
extra_pg=""
extra_redis=""
main_name=""
for arg in "$@"; do
  name=${arg%%=*}
  spec=${arg#*=}
  bin=${spec%%@*}
  envfile=""
  [[ $spec == *@* ]] && envfile=$(realpath "${spec#*@}")
  bin=$(realpath "$bin")
  vars="TOLLGATE_BIN='$bin' TOLLGATE_SUBDIR='col_$name' TOLLGATE_AGENTS_FILE='$agents' TOLLGATE_TOKEN='$token'"
  load=""
  [[ -n $envfile ]] && load="set -a; . '$envfile'; set +a;"
  if [[ -z $main_name ]]; then
    main_name=$name
    main="( $load $vars exec '$here/bench/gateway-cmd.sh' )"
  else
    p=$(free_port); r=$(free_port)
    cmd+="( $load $vars TOLLGATE_PG_PORT=$p TOLLGATE_REDIS_PORT=$r TOLLGATE_NO_ENV=1 '$here/bench/gateway-cmd.sh' ) & "
    cmd+="for _ in \$(seq 1 200); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && (echo > /dev/tcp/127.0.0.1/$r) 2>/dev/null && break; sleep 0.1; done; "
    extra_pg+="$name=postgresql://bench:$token@127.0.0.1:$p/bench?sslmode=disable "
    extra_redis+="$name=redis://bench:$token@127.0.0.1:$r "
  fi
done
cmd+="$main"
GATEWAY_NAME=$main_name GATEWAY_CMD="$cmd" EXTRA_PG_TARGETS="$extra_pg" EXTRA_REDIS_TARGETS="$extra_redis" \
  "$here/../shared/bench/anchors.sh"
