#!/usr/bin/env bash
# Driver test suites through tollgate (issue 17): psycopg2's and redis-py's own test suites,
# from their pinned PyPI source distributions, run twice on fresh demos: direct against the
# upstream (as the vaulted PostgreSQL role / the vaulted Redis login, with the same rights) and
# through the demo's `trusted` agent (passthrough). compare.py checks test by test that whatever
# passes direct passes through tollgate, except the deliberate refusals it lists (docs/clients.md
# has them with the reasons). While the trusted runs go on, prober.py checks every half second
# that the other agents (analyst, writer; PostgreSQL and Redis) still log in and are served.
#
#   tests/clients/suites/run.sh                        # both suites (~15 min on 2 cores)
#   TOLLGATE_SUITES=redis-py tests/clients/suites/run.sh
#   TOLLGATE_SUITES_REUSE_DIRECT=1 ...   # keep the last direct results (target/suites/*-direct.xml)
#
# Not in CI (it takes longer than a few minutes); docs/clients.md keeps the numbers of the last
# run. psycopg 3 publishes no tests in its sdist: psycopg2 (the same project's libpq driver,
# whose sdist ships its suite) stands in; with PSYCOPG3_TESTS=/path/to/a/psycopg/checkout at the
# tag of the installed version, its tests/ run too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HERE=$ROOT/tests/clients/suites
OUT=$ROOT/target/suites
CACHE=${TOLLGATE_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-clients}
SUITES=${TOLLGATE_SUITES:-"psycopg2 redis-py"}
PSYCOPG2=2.9.13
REDIS_PY=8.1.0
mkdir -p "$OUT" "$CACHE"
say() { echo "suites: $*"; }
die() {
  echo "suites: $*" >&2
  exit 1
}
wants() { [[ " $SUITES " == *" $1 "* ]]; }
for cmd in python3 psql cargo; do
  command -v "$cmd" >/dev/null || die "missing: $cmd"
done

# --- installs (pinned, cached) --------------------------------------------------------------
key=$(printf '%s %s' "$(python3 -c 'import sys; print(sys.version)')" "$(sha256sum "$HERE/requirements.txt")" | sha256sum | cut -c1-16)
venv=$CACHE/suites-venv-$key
if [ ! -f "$venv/.complete" ]; then
  say "installing into $venv (pinned: tests/clients/suites/requirements.txt)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$HERE/requirements.txt" >"$OUT/pip.log" 2>&1 || {
    cat "$OUT/pip.log" >&2
    die "pip install failed"
  }
  touch "$venv/.complete"
fi
PY=$venv/bin/python
sdists=$CACHE/suites-sdists
mkdir -p "$sdists"
for spec in "psycopg2==$PSYCOPG2" "redis==$REDIS_PY"; do
  file=$sdists/${spec%%==*}-${spec##*==}.tar.gz
  if [ ! -f "$file" ]; then
    say "downloading the sdist of $spec (its test suite)"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
      "$spec" -d "$sdists" >>"$OUT/pip.log" 2>&1 || die "pip download $spec failed"
  fi
done
rm -rf "$OUT/src"
mkdir -p "$OUT/src"
tar xzf "$sdists/psycopg2-$PSYCOPG2.tar.gz" -C "$OUT/src"
tar xzf "$sdists/redis-$REDIS_PY.tar.gz" -C "$OUT/src"

(cd "$ROOT" && cargo build --quiet --bin tollgate) || die "cargo build failed"
TOLLGATE=$ROOT/target/debug/tollgate

# --- demos ------------------------------------------------------------------------------------
demo_pid=""
start_demo() { # label
  local env_file=$OUT/demo-$1.env
  rm -f "$env_file"
  "$TOLLGATE" demo --env-file "$env_file" >"$OUT/demo-$1.log" 2>&1 &
  demo_pid=$!
  for _ in $(seq 1 1200); do
    [ -f "$env_file" ] && break
    kill -0 "$demo_pid" 2>/dev/null || die "demo exited (see $OUT/demo-$1.log)"
    sleep 0.1
  done
  [ -f "$env_file" ] || die "demo wrote no env file"
  set -a
  # shellcheck disable=SC1090
  . "$env_file"
  set +a
  CONFIG=$(dirname "$TOLLGATE_AUDIT_LOG")/tollgate.toml
  # The suites create their own tables: the vaulted role gets CREATE, for both runs alike.
  psql -q "$TOLLGATE_UPSTREAM_PG_URL" -c "GRANT CREATE ON SCHEMA public TO tollgate_shop; GRANT CREATE ON DATABASE shop TO tollgate_shop" >/dev/null
}
stop_demo() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  wait "$demo_pid" 2>/dev/null || true
  demo_pid=""
}
prober_pid=""
stop_prober() {
  if [ -n "$prober_pid" ]; then
    kill -TERM "$prober_pid" 2>/dev/null || true
    wait "$prober_pid" 2>/dev/null || true
    prober_pid=""
  fi
}
trap 'stop_prober; stop_demo' EXIT

url_part() { "$PY" -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print({"host": p.hostname, "port": p.port, "user": u.unquote(p.username or ""), "password": u.unquote(p.password or "")}[sys.argv[2]])' "$1" "$2"; }

run_psycopg2() { # label host port user password
  say "psycopg2 $PSYCOPG2 suite, $1"
  (cd "$OUT/src/psycopg2-$PSYCOPG2" &&
    PSYCOPG2_TESTDB=shop PSYCOPG2_TESTDB_HOST=$2 PSYCOPG2_TESTDB_PORT=$3 \
      PSYCOPG2_TESTDB_USER=$4 PSYCOPG2_TESTDB_PASSWORD=$5 PGSSLMODE=disable \
      timeout 2400 "$PY" -m pytest tests -p no:cacheprovider -q --timeout 120 --tb=native \
      --junitxml="$OUT/psycopg2-$1.xml") >"$OUT/psycopg2-$1.log" 2>&1 || true
  tail -1 "$OUT/psycopg2-$1.log"
}

run_redis_py() { # label url
  say "redis-py $REDIS_PY suite, $1"
  (cd "$OUT/src/redis-$REDIS_PY" &&
    timeout 3600 "$PY" -m pytest tests -p no:cacheprovider -q --timeout 60 --tb=native \
      --redis-url="$2" --ignore=tests/test_scenario --ignore=tests/test_multidb \
      --ignore=tests/maint_notifications --ignore=tests/test_observability \
      --ignore=tests/test_http --ignore=tests/test_auth \
      --continue-on-collection-errors \
      --junitxml="$OUT/redis-py-$1.xml") >"$OUT/redis-py-$1.log" 2>&1 || true
  tail -1 "$OUT/redis-py-$1.log"
}

run_psycopg3() { # label dsn
  [ -n "${PSYCOPG3_TESTS:-}" ] || return 0
  say "psycopg 3 suite from $PSYCOPG3_TESTS, $1"
  (cd "$PSYCOPG3_TESTS" && timeout 3600 "$PY" -m pytest tests -p no:cacheprovider -q \
    --timeout 120 --test-dsn "$2" --junitxml="$OUT/psycopg3-$1.xml") >"$OUT/psycopg3-$1.log" 2>&1 || true
  tail -1 "$OUT/psycopg3-$1.log"
}

started=$(date +%s)
# Direct: the vaulted logins themselves, on a demo of their own.
if [ -z "${TOLLGATE_SUITES_REUSE_DIRECT:-}" ]; then
  start_demo direct
  host=$(url_part "$TOLLGATE_UPSTREAM_PG_URL" host)
  port=$(url_part "$TOLLGATE_UPSTREAM_PG_URL" port)
  role_password=$("$TOLLGATE" vault --config "$CONFIG" get shop_password)
  wants psycopg2 && run_psycopg2 direct "$host" "$port" tollgate_shop "$role_password"
  run_psycopg3 direct "host=$host port=$port dbname=shop user=tollgate_shop password=$role_password sslmode=disable"
  wants redis-py && run_redis_py direct "$TOLLGATE_UPSTREAM_REDIS_URL/9"
  stop_demo
fi

# Through the trusted agent, on a fresh demo, with the other agents probed meanwhile.
start_demo trusted
"$PY" "$HERE/prober.py" >"$OUT/prober.log" 2>&1 &
prober_pid=$!
gw_port=$(url_part "$TOLLGATE_PG_TRUSTED_URL" port)
token=$(url_part "$TOLLGATE_PG_TRUSTED_URL" password)
wants psycopg2 && run_psycopg2 trusted 127.0.0.1 "$gw_port" trusted "$token"
run_psycopg3 trusted "host=127.0.0.1 port=$gw_port dbname=shop user=trusted password=$token sslmode=disable"
wants redis-py && run_redis_py trusted "$TOLLGATE_REDIS_TRUSTED_URL/9"
stop_prober
# After the suites every agent still logs in.
"$PY" - <<'EOF' >>"$OUT/prober.log" 2>&1 || echo "FAIL after the suites" >>"$OUT/prober.log"
import os, psycopg2, redis
for agent in ("ANALYST", "WRITER", "TRUSTED"):
    psycopg2.connect(os.environ[f"TOLLGATE_PG_{agent}_URL"]).close()
    assert redis.Redis.from_url(os.environ[f"TOLLGATE_REDIS_{agent}_URL"]).ping()
print("after the suites: every agent logs in on both protocols")
EOF
stop_demo

# --- comparison -------------------------------------------------------------------------------
failed=0
wants psycopg2 && { "$PY" "$HERE/compare.py" psycopg2 "$OUT/psycopg2-direct.xml" "$OUT/psycopg2-trusted.xml" || failed=1; }
wants redis-py && { "$PY" "$HERE/compare.py" redis-py "$OUT/redis-py-direct.xml" "$OUT/redis-py-trusted.xml" || failed=1; }
if [ -n "${PSYCOPG3_TESTS:-}" ]; then
  "$PY" "$HERE/compare.py" psycopg3 "$OUT/psycopg3-direct.xml" "$OUT/psycopg3-trusted.xml" || failed=1
fi
grep -E "FAIL|probes:|after the suites" "$OUT/prober.log" || true
if grep -q "FAIL" "$OUT/prober.log" || ! grep -q "failures: 0" "$OUT/prober.log"; then
  say "other agents were not served while the suites ran (see $OUT/prober.log)"
  failed=1
fi
say "wall time $(($(date +%s) - started))s; logs and JUnit files in $OUT"
exit $failed
