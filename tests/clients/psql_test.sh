#!/usr/bin/env bash
# psql through tollgate: \d, \dt, \d customers, variables (\set, :'v', \gset, \if,
# LAST_ERROR_SQLSTATE, VERBOSITY), \copy out and in (writer on orders; analyst refused),
# \gexec (allowed and refused statements), \watch 1 for two iterations, Ctrl-C cancel,
# masking in aligned and expanded output. Needs TOLLGATE_PG_*_URL in the environment.
TITLE="psql $(psql --version | awk '{print $3}')"
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1

A=$TOLLGATE_PG_ANALYST_URL
W=$TOLLGATE_PG_WRITER_URL
PSQL=(psql -X -P pager=off)

out=$("${PSQL[@]}" "$A" -c '\d' 2>&1)
expect '\d lists relations' "$out" 'public \| customers +\| table' 'public \| orders +\| table' 'orders_id_seq +\| sequence'
out=$("${PSQL[@]}" "$A" -c '\dt' 2>&1)
expect '\dt lists tables' "$out" 'public \| customers +\| table' 'public \| orders +\| table' '\([0-9]+ rows\)'
out=$("${PSQL[@]}" "$A" -c '\d customers' 2>&1)
expect '\d customers' "$out" 'Table "public.customers"' ' email +\| text' ' ssn +\| text' '"customers_pkey" PRIMARY KEY, btree \(id\)' 'orders_customer_id_fkey'

out=$("${PSQL[@]}" "$A" 2>&1 <<'SQL'
\set lim 3
\set wanted 2
SELECT id, email, phone, ssn FROM customers ORDER BY id LIMIT :lim;
SELECT region AS first_region FROM customers WHERE id = :wanted \gset
\echo region=:first_region
SELECT count(*) > 0 AS has_rows FROM customers WHERE region = :'first_region' \gset
\if :has_rows
\echo if-branch-taken
\endif
\x on
SELECT email, ssn FROM customers WHERE id = 1;
\x off
SELECT * FROM secrets;
\echo sqlstate=:LAST_ERROR_SQLSTATE
\set VERBOSITY verbose
INSERT INTO orders (customer_id, amount) VALUES (1, 1);
\set VERBOSITY default
SELECT 'still usable' AS after;
SQL
)
expect 'masked rows (aligned)' "$out" "^  1 \\| $EMAIL_MASK \\| \\*\\*\\*[0-9]{4} \\| REDACTED" '\(3 rows\)'
expect 'variables: \set, \gset, :'"'"'v'"'"', \if' "$out" '^region=[A-Z]+' '^if-branch-taken'
expect 'masked rows (expanded)' "$out" "^email \\| $EMAIL_MASK" '^ssn +\| REDACTED'
expect 'refusal with SQLSTATE in LAST_ERROR_SQLSTATE' "$out" "$REFUSAL" 'secrets' '^sqlstate=42501'
expect 'VERBOSITY verbose shows 42501' "$out" 'ERROR:  42501: tollgate: permission denied: no rule allows insert on public.orders' 'HINT:  allowed on "shop": public\.customers \(select; masked: email, phone, ssn\)'
expect 'session usable after refusals' "$out" 'still usable'

# ON_ERROR_STOP: a refusal stops a script with psql's exit code 3.
"${PSQL[@]}" "$A" -v ON_ERROR_STOP=1 -c 'SELECT 1' -c 'SELECT * FROM secrets' -c 'SELECT 2' >/dev/null 2>&1
rc=$?
if [ "$rc" = 1 ] || [ "$rc" = 3 ]; then ok "ON_ERROR_STOP stops at the refusal (exit $rc)"; else fail "ON_ERROR_STOP exit code $rc"; fi

# \copy out and in as writer, on orders; customers come out masked.
before=$("${PSQL[@]}" "$W" -Atc 'SELECT count(*) FROM orders')
out=$("${PSQL[@]}" "$W" -v ON_ERROR_STOP=1 2>&1 <<'SQL'
\copy (SELECT customer_id, 4321.09 AS amount, created_at FROM orders ORDER BY id LIMIT 25) TO 'orders25.csv' CSV HEADER
\copy orders (customer_id, amount, created_at) FROM 'orders25.csv' CSV HEADER
\copy customers (id, email, phone, ssn) TO 'customers.csv' CSV
SQL
)
expect '\copy out and in (writer)' "$out" '^COPY 25$' '^COPY 5000$'
after=$("${PSQL[@]}" "$W" -Atc 'SELECT count(*) FROM orders')
if [ "$after" = $((before + 25)) ]; then ok '\copy in added 25 orders'; else fail '\copy in' "before=$before after=$after"; fi
if [ "$(wc -l <customers.csv)" = 5000 ] && ! grep -Evq "^[0-9]+,$EMAIL_MASK,(\\*\\*\\*[0-9]{4})?,(REDACTED)?\$" customers.csv; then
  ok '\copy customers out is masked'
else
  fail '\copy customers out is masked' "$(grep -Ev "^[0-9]+,$EMAIL_MASK," customers.csv | head -3)"
fi
"${PSQL[@]}" "$W" -qAtc 'DELETE FROM orders WHERE amount = 4321.09' >/dev/null
out=$("${PSQL[@]}" "$A" -c "\\copy orders TO 'analyst.csv' CSV" 2>&1)
expect '\copy refused for analyst' "$out" 'ERROR:  tollgate: COPY statements are not allowed.*\(rule: default-deny\)'

# \gexec: each generated statement is checked on its own.
out=$("${PSQL[@]}" "$A" 2>&1 <<'SQL'
SELECT format('SELECT count(*) AS n_%s FROM %I', t, t) FROM unnest(ARRAY['orders', 'secrets', 'customers']) AS t \gexec
SELECT 'DELETE FROM orders WHERE id = ' || 1 \gexec
SELECT 'gexec-done' AS marker;
SQL
)
expect '\gexec: allowed statements run' "$out" 'n_orders' 'n_customers' '^ +5000$' 'gexec-done'
expect '\gexec: policy-breaking statements refused' "$out" "ERROR:  tollgate: permission denied: no rule allows select on public.secrets \\(rule: default-deny\\)" "ERROR:  tollgate: permission denied: no rule allows delete on public.orders"

# \watch 1: psql 15 has no iteration count; SIGINT after 3.5 s ends the watch, the script goes on.
printf 'SELECT count(*) AS watched FROM orders WHERE amount > 0 \\watch 1\n\\echo after-watch\n' >watch.sql
out=$(timeout -s INT 3.5 "${PSQL[@]}" "$A" -f watch.sql 2>&1)
n=$(grep -c '(every 1s)' <<<"$out")
if [ "$n" -ge 2 ] && grep -q '^after-watch' <<<"$out"; then ok "\\watch 1 ran $n iterations"; else fail '\watch 1 for two iterations' "$out"; fi

# Ctrl-C during a statement: psql sends a CancelRequest, which tollgate forwards upstream.
printf 'SELECT pg_sleep(20);\n' >sleep.sql
out=$(timeout -s INT 1.5 "${PSQL[@]}" "$A" -f sleep.sql 2>&1)
expect "cancel (Ctrl-C) reaches the upstream" "$out" 'canceling statement due to user request'

finish
