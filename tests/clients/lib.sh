# Shared by the shell client programs in tests/clients (sourced): the same ok/FAIL lines as the
# Python and Node harnesses. Each check runs in the caller's shell; `finish` prints the count
# and exits 1 if any check failed.
set -uo pipefail

_passed=0
_failed=0
TITLE=${TITLE:-client}
WORK=${WORK:-$(mktemp -d)}

ok() { _passed=$((_passed + 1)); echo "ok   $TITLE: $1"; }
fail() {
  _failed=$((_failed + 1))
  echo "FAIL $TITLE: $1"
  shift
  for detail in "$@"; do printf '%s\n' "$detail" | sed 's/^/    /'; done
}

# expect NAME HAYSTACK REGEX...: every extended regex must match somewhere in HAYSTACK.
expect() {
  local name=$1 text=$2
  shift 2
  local re
  for re in "$@"; do
    if ! grep -Eq -- "$re" <<<"$text"; then
      fail "$name" "missing /$re/ in:" "$text"
      return 1
    fi
  done
  ok "$name"
}

# expect_not NAME HAYSTACK REGEX: REGEX must not match.
expect_not() {
  if grep -Eq -- "$3" <<<"$2"; then
    fail "$1" "unexpected /$3/ in:" "$2"
    return 1
  fi
  ok "$1"
}

finish() {
  echo "$TITLE: $_passed passed, $_failed failed"
  [ "$_failed" -eq 0 ]
  exit $?
}

EMAIL_MASK='\*\*\*@example\.(org|net|com)'
REFUSAL='ERROR:  tollgate: .*\(rule: [^)]+\)'
