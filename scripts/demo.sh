#!/usr/bin/env bash
# Runs `tollgate demo`: a throwaway PostgreSQL, seeded data, example agents and policies and the
# gateway in front. Extra arguments go to the demo (e.g. --env-file demo.env).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh demo
cargo build --release --quiet
exec target/release/tollgate demo "$@"
