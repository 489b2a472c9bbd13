#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test
# (unit, integration against a real PostgreSQL, the binary, psql and pgbench), then the client
# compatibility suite (tests/clients/run.sh: real drivers and tools against the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Bounded: a test that hangs fails the run here, with its name, instead of using up CI's time
# (the suite takes about 10 minutes on 2 cores, 15 with a build from scratch).
status=0
timeout --kill-after=30 2700 cargo test --all-targets || status=$?
if [ "$status" != 0 ]; then
  [ "$status" = 124 ] && echo "tollgate: the test suite did not finish within 45 minutes (a hung test: see the last 'running for over 60 seconds' line above)" >&2
  exit "$status"
fi
tests/clients/run.sh
