#!/usr/bin/env bash
# The client compatibility suite (issue 8): real client libraries and tools against one
# `tollgate demo` (demo policies on: masking, refusals, row limits; the analyst's statement rate
# lifted with --unlimited-rate because the suite runs thousands of statements as analyst).
#
#   tests/clients/run.sh                 # every client
#   TOLLGATE_CLIENTS="psql psycopg" tests/clients/run.sh   # a subset
#
# Installs what it needs, pinned, into caches that survive a fresh clone:
#   Python: a venv per requirements hash under ${TOLLGATE_CLIENTS_CACHE:-~/.cache/tollgate-clients}
#   Node:   `npm ci` in tests/clients/node (package-lock.json committed; npm's own cache ~/.npm):
#           node-postgres, ioredis, the `mongodb` driver and mongosh
# The demo itself installs SecantusDB (its MongoDB-wire test server) into a cached venv.
#   Java:   Debian's libpostgresql-jdbc-java (/usr/share/java/postgresql.jar), compiled with javac
# Anything missing or not installable is named and the suite fails; nothing is skipped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/clients
OUT=$ROOT/target/clients
CACHE=${TOLLGATE_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-clients}
JDBC_JAR=${TOLLGATE_JDBC_JAR:-/usr/share/java/postgresql.jar}
ALL_CLIENTS="psql pgbench psycopg asyncpg sqlalchemy node-postgres jdbc redis-py ioredis redis-cli pymongo mongodb-node mongosh mcp"
CLIENTS=${TOLLGATE_CLIENTS:-$ALL_CLIENTS}
suite_start=$(date +%s)
mkdir -p "$OUT" "$CACHE"
rm -rf "$OUT"/work-*

say() { echo "clients: $*"; }
die() {
  echo "clients: $*" >&2
  echo "clients: 0 passed, 1 failed"
  exit 1
}

wants() { [[ " $CLIENTS " == *" $1 "* ]]; }

# --- prerequisites: name exactly what is missing -------------------------------------------
missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need_cmd psql "Debian package postgresql-client"
need_cmd pgbench "Debian package postgresql-15"
need_cmd redis-cli "Debian package redis-tools"
need_cmd timeout "Debian package coreutils"
if wants psycopg || wants asyncpg || wants sqlalchemy || wants redis-py || wants pymongo || wants mcp; then
  need_cmd python3 "CPython >= 3.9 with the venv module"
fi
if wants node-postgres || wants ioredis || wants mongodb-node || wants mongosh; then
  need_cmd node "Node.js >= 18"
  need_cmd npm "npm"
fi
if wants jdbc; then
  need_cmd javac "a JDK >= 11, e.g. Debian package default-jdk-headless"
  need_cmd java "a JDK >= 11"
  [ -r "$JDBC_JAR" ] || missing+=("$JDBC_JAR (Debian package libpostgresql-jdbc-java; scripts/ensure-deps.sh installs it)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  die "missing: ${missing[*]}"
fi

sha() { sha256sum "$@" | sha256sum | cut -c1-16; }

# --- installs (pinned, cached) --------------------------------------------------------------
install_start=$(date +%s)
PY=""
if wants psycopg || wants asyncpg || wants sqlalchemy || wants redis-py || wants pymongo || wants mcp; then
  key=$(printf '%s %s' "$(python3 -c 'import sys; print(sys.version)')" "$(sha "$HERE/python/requirements.txt")" | sha256sum | cut -c1-16)
  venv=$CACHE/venv-$key
  if [ ! -f "$venv/.complete" ]; then
    say "installing Python clients into $venv (pinned: tests/clients/python/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
      -r "$HERE/python/requirements.txt" >"$OUT/pip.log" 2>&1; then
      cat "$OUT/pip.log" >&2
      die "pip could not install tests/clients/python/requirements.txt from PyPI (see above)"
    fi
    touch "$venv/.complete"
  fi
  PY=$venv/bin/python
fi
if wants node-postgres || wants ioredis || wants mongodb-node || wants mongosh; then
  stamp=$HERE/node/node_modules/.tollgate-lock-sha
  want=$(sha "$HERE/node/package-lock.json")
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Node clients (npm ci, tests/clients/node/package-lock.json)"
    if ! (cd "$HERE/node" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >"$OUT/npm.log" 2>&1; then
      cat "$OUT/npm.log" >&2
      die "npm ci failed in tests/clients/node (see above)"
    fi
    echo "$want" >"$stamp"
  fi
fi
JAVA_CP=""
if wants jdbc; then
  classes=$OUT/java
  if [ ! -f "$classes/JdbcClient.class" ] || [ "$HERE/java/JdbcClient.java" -nt "$classes/JdbcClient.class" ] || [ "$JDBC_JAR" -nt "$classes/JdbcClient.class" ]; then
    mkdir -p "$classes"
    javac -d "$classes" -cp "$JDBC_JAR" "$HERE/java/JdbcClient.java" || die "javac failed on tests/clients/java/JdbcClient.java"
  fi
  JAVA_CP=$classes:$JDBC_JAR
fi
install_secs=$(($(date +%s) - install_start))

# --- the demo -------------------------------------------------------------------------------
(cd "$ROOT" && cargo build --quiet --bin tollgate) || die "cargo build --bin tollgate failed"
env_file=$OUT/demo.env
rm -f "$env_file"
"$ROOT/target/debug/tollgate" demo --env-file "$env_file" --unlimited-rate >"$OUT/demo.log" 2>&1 &
demo_pid=$!
stop_demo() {
  if kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  wait "$demo_pid" 2>/dev/null || true
}
trap stop_demo EXIT
for _ in $(seq 1 1200); do
  [ -f "$env_file" ] && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$OUT/demo.log" >&2; die "tollgate demo exited before writing $env_file"; }
  sleep 0.1
done
[ -f "$env_file" ] || { cat "$OUT/demo.log" >&2; die "tollgate demo wrote no env file within 120 s"; }
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
export TOLLGATE_BIN=$ROOT/target/debug/tollgate # the MCP stdio bridge
say "demo up ($(($(date +%s) - suite_start))s so far, installs ${install_secs}s); logs in $OUT"

# --- the clients ----------------------------------------------------------------------------
passed=0
failed=0
failed_names=()
run_client() { # name command...
  local name=$1
  shift
  wants "$name" || return 0
  local log=$OUT/$name.log start rc
  start=$(date +%s%N)
  set +e
  (cd "$HERE" && WORK=$(mktemp -d "$OUT/work-$name.XXXX") timeout 300 "$@") >"$log" 2>&1
  rc=$?
  set -e
  local secs summary
  local ms=$((($(date +%s%N) - start) / 1000000))
  secs=$((ms / 1000)).$((ms % 1000 / 100))
  summary=$(grep -E ': [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
  if [ $rc -eq 0 ] && [ -n "$summary" ]; then
    passed=$((passed + 1))
    printf 'PASS  %-14s %s (%ss)\n' "$name" "$summary" "$secs"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    [ $rc -eq 124 ] && summary="timed out after 300 s"
    printf 'FAIL  %-14s %s (exit %s, %ss)\n' "$name" "${summary:-no summary line}" "$rc" "$secs"
    sed 's/^/      | /' "$log" | grep -v '^      | ok ' | tail -60
  fi
}

run_client psql bash psql_test.sh
run_client pgbench bash pgbench_test.sh
run_client psycopg "$PY" python/test_psycopg.py
run_client asyncpg "$PY" python/test_asyncpg.py
run_client sqlalchemy "$PY" python/test_sqlalchemy.py
run_client node-postgres node node/pg_test.js
run_client jdbc java -cp "$JAVA_CP" JdbcClient
run_client redis-py "$PY" python/test_redis_py.py
run_client ioredis node node/ioredis_test.js
run_client redis-cli bash redis_cli_test.sh
run_client pymongo "$PY" python/test_pymongo.py
run_client mongodb-node node node/mongodb_test.js
run_client mongosh bash mongosh_test.sh
run_client mcp "$PY" python/test_mcp.py

# Every statement above went through the audit log: its hash chain must still verify.
if "$ROOT/target/debug/tollgate" audit verify "$TOLLGATE_AUDIT_LOG" >"$OUT/audit-verify.log" 2>&1; then
  passed=$((passed + 1))
  printf 'PASS  %-14s %s\n' audit-chain "$(tail -1 "$OUT/audit-verify.log")"
else
  failed=$((failed + 1))
  failed_names+=(audit-chain)
  printf 'FAIL  %-14s\n' audit-chain
  tail -20 "$OUT/audit-verify.log"
fi

stop_demo
trap - EXIT
# SIGTERM stops the demo whole: the gateway before the files it watches are removed (it used to
# warn that reloading its policies and certificate failed), and nothing logged at ERROR.
if kill -0 "$demo_pid" 2>/dev/null || grep -E "reload failed| ERROR " "$OUT/demo.log" >"$OUT/demo-stop.log"; then
  failed=$((failed + 1))
  failed_names+=(demo-stop)
  printf 'FAIL  %-14s\n' demo-stop
  cat "$OUT/demo-stop.log"
else
  passed=$((passed + 1))
  printf 'PASS  %-14s %s\n' demo-stop "stopped on SIGTERM, no reload or error logged"
fi
say "wall time $(($(date +%s) - suite_start))s (installs ${install_secs}s)"
[ $failed -eq 0 ] || say "failed: ${failed_names[*]} (logs in $OUT)"
echo "clients: $passed passed, $failed failed"
[ $failed -eq 0 ]
