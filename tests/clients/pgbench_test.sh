#!/usr/bin/env bash
# pgbench through tollgate in the three query modes (simple, extended, prepared):
#   - TPC-B-like builtin script as `trusted` (passthrough) on tables that `pgbench -i` created
#     directly upstream (DDL needs the upstream; the demo's upstream role gets DML grants);
#   - a custom select script as `analyst` on orders and an update script as `writer`.
# Asserts every run finishes with 0 failed transactions and processes what it was asked.
TITLE="pgbench $(pgbench --version | awk '{print $3}')"
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1

out=$(pgbench -i -s 1 -q "$TOLLGATE_UPSTREAM_PG_URL" 2>&1 &&
  psql -X -q "$TOLLGATE_UPSTREAM_PG_URL" -c "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO tollgate_shop" 2>&1)
if [ $? -ne 0 ]; then fail "pgbench -i upstream" "$out"; finish; fi
ok "pgbench -i on the upstream"

printf '\\set id random(1, 50000)\nSELECT amount, created_at FROM orders WHERE id = :id;\n' >analyst.sql
printf '\\set id random(1, 50000)\nBEGIN;\nUPDATE orders SET amount = amount WHERE id = :id;\nSELECT amount FROM orders WHERE id = :id;\nEND;\n' >writer.sql

run_bench() { # name expected-processed args...
  local name=$1 want=$2
  shift 2
  local out
  out=$(pgbench -n "$@" 2>&1)
  local processed failed
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  if [ -n "$processed" ] && [ "${failed:-0}" = 0 ] && { [ "$want" = any ] && [ "$processed" -gt 0 ] || [ "$processed" = "$want" ]; }; then
    ok "$name: $processed transactions, 0 failed, $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | cut -d. -f1) tps"
  else
    fail "$name" "$out"
  fi
}

for mode in simple extended prepared; do
  run_bench "tpcb-like -M $mode (trusted)" any -M "$mode" -c 2 -T 3 "$TOLLGATE_PG_TRUSTED_URL"
  run_bench "select script -M $mode (analyst)" 400 -M "$mode" -c 2 -t 200 -f analyst.sql "$TOLLGATE_PG_ANALYST_URL"
  run_bench "update script -M $mode (writer)" 200 -M "$mode" -c 2 -t 100 -f writer.sql "$TOLLGATE_PG_WRITER_URL"
done

# A refused statement is a failed transaction for pgbench, with tollgate's message.
printf 'SELECT api_key FROM secrets;\n' >refused.sql
out=$(pgbench -n -t 1 -f refused.sql "$TOLLGATE_PG_ANALYST_URL" 2>&1)
expect 'refused script fails with the policy message' "$out" 'tollgate: permission denied: no rule allows select on public.secrets \(rule: default-deny\)'

finish
