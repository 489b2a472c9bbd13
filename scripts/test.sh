#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test
# (unit, integration against a real PostgreSQL, the binary, psql and pgbench), then the client
# compatibility suite (tests/clients/run.sh: real drivers and tools against the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
tests/clients/run.sh
