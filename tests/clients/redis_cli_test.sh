#!/usr/bin/env bash
# redis-cli through tollgate's Redis listener, in its interactive mode (commands fed on stdin, no
# command arguments, so it runs its REPL): analyst reads cache:* and session:* with the email
# field masked, admin:* / FLUSHALL / KEYS / writes refused with NOPERM and the rule; AUTH typed in
# the REPL; RESP3 (-3); the writer's writes. Also raw inline commands (the inline protocol) over
# a plain TCP socket.
TITLE="redis-cli $(redis-cli --version | awk '{print $2}')"
. "$(dirname "$0")/lib.sh"

A=$TOLLGATE_REDIS_ANALYST_URL
W=$TOLLGATE_REDIS_WRITER_URL
NOPERM='NOPERM tollgate: .*\(rule: [^)]+\)'

out=$(printf '%s\n' 'PING' 'GET cache:1' 'HGETALL session:1' 'HGET session:2 email' 'GET admin:config' \
  'FLUSHALL' 'KEYS admin:*' 'SET cache:1 x' 'GET cache:2' | redis-cli -u "$A" --no-auth-warning 2>&1)
expect 'REPL reads as analyst' "$out" '^PONG$' '^cached value 1$' '^user1$' '^cached value 2$'
expect 'session email masked' "$out" "^$EMAIL_MASK\$"
expect_not 'no clear email' "$out" 'user[0-9]+@example'
expect 'admin:* refused' "$out" "NOPERM tollgate: no rule allows 'get' to read key 'admin:config' \\(rule: default-deny\\)"
expect 'FLUSHALL and KEYS refused' "$out" "NOPERM tollgate: command 'flushall' is refused.*\\(rule: builtin: dangerous-command\\)" "NOPERM tollgate: command 'keys' is refused"
expect 'write refused for analyst' "$out" "NOPERM tollgate: no rule allows command 'set'"

out=$(printf '%s\n' 'HGETALL session:3' 'GET admin:users' 'GET cache:3' | redis-cli -3 -u "$A" --no-auth-warning 2>&1)
expect 'RESP3 REPL: map reply masked, refusal, read' "$out" "^2# \"email\" => \"$EMAIL_MASK\"|email.*$EMAIL_MASK" "$NOPERM" '^"?cached value 3"?$'

port=${A##*:}
token=$(sed 's#^redis://analyst:\(.*\)@.*#\1#' <<<"$A")
out=$(printf '%s\n' 'GET cache:1' "AUTH analyst $token" 'GET cache:4' 'AUTH analyst wrong' | redis-cli -p "$port" 2>&1)
expect 'AUTH typed in the REPL' "$out" '^NOAUTH' '^OK$' '^cached value 4$' 'WRONGPASS'

out=$(printf '%s\n' 'SET cache:cli hello' 'APPEND cache:cli !' 'GET cache:cli' 'DEL cache:cli' 'SET admin:x 1' | redis-cli -u "$W" --no-auth-warning 2>&1)
expect 'writer writes cache:*, not admin:*' "$out" '^OK$' '^hello!$' "$NOPERM"

# The inline protocol (what telnet users type): tollgate parses and re-encodes inline commands.
if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  printf 'AUTH analyst %s\r\nGET cache:1\r\nHGET session:1 email\r\nGET admin:config\r\nQUIT\r\n' "$token" >&3
  out=$(timeout 5 cat <&3)
  exec 3<&-
  expect 'inline commands' "$out" '^\+OK' 'cached value 1' "$EMAIL_MASK" "^-$NOPERM"
else
  fail 'inline commands' "cannot connect to 127.0.0.1:$port"
fi

# The demo's direct upstream URL works with redis-cli -u as printed by `tollgate demo`.
out=$(redis-cli -u "$TOLLGATE_UPSTREAM_REDIS_URL" --no-auth-warning PING 2>&1)
expect 'upstream URL usable with redis-cli -u' "$out" '^PONG$'

finish
