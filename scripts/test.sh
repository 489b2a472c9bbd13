#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test
# (unit, integration against a real PostgreSQL, the binary, psql and pgbench).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
