"""Compares a driver's own test suite run direct and through tollgate (pytest JUnit XML files):
every test that passes direct must pass through the gateway, unless it tests a deliberate
refusal listed in DELIBERATE (mirrored in docs/clients.md, with the reason). Prints the counts,
every difference with its reason, and `<suite>: N passed, M failed` (failed = unexplained
differences); exits 1 if any."""

import re
import sys
import xml.etree.ElementTree as ET

# (suite, regular expression on "module.Class::test", reason). Keep docs/clients.md in step.
DELIBERATE = [
    ("psycopg2", r"test_types_extras\.JsonTestCase::test_scs$",
     "standard_conforming_strings = off is refused for every agent (builtin: protected-setting): "
     "with it off the server reads backslashes differently from tollgate's analysis"),
    ("psycopg2", r"test_connection\.TestConnectionInfo::test_user$",
     "the agent logs in as itself (conn.info.user = 'trusted') and runs as the vaulted role "
     "(SELECT user = the upstream role): the agent never holds the upstream credentials"),
    ("psycopg2", r"test_(async\.AsyncTests|green\.GreenTestCase)::test_flush_on_write$",
     "statements over limits.max_statement_bytes (1 MiB by default, tollgate.toml) are refused "
     "for every agent (builtin: statement-size); the test sends 1 to 50 MiB"),
    ("redis-py", r"::test_client_pause(_all)?(\[|$)",
     "CLIENT PAUSE pauses every client of the upstream (builtin: availability)"),
    ("redis-py", r"::test_config_set(_multi_params)?(\[|$)",
     "CONFIG SET timeout closes every agent's idle connections (builtin: availability)"),
    ("redis-py", r"::test_slowlog_get(_limit)?(\[|$)",
     "the test starts with SLOWLOG RESET, which clears every client's entries (builtin: own-connections)"),
    ("redis-py", r"TestRedisCommands::test_auth$",
     "AUTH is tollgate's own login (agents and tokens); logging in to the upstream as another Redis "
     "user is never forwarded"),
    ("redis-py", r"TestMonitor::test_lua_script",
     "MONITOR shows a script's commands as [db lua], with no client: tollgate cannot tell whose they "
     "are and leaves them out"),
]

# Differences that belong to work done elsewhere: reported, not counted as failures here.
ELSEWHERE = []


def outcomes(path):
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            result[name] = "failed"
        elif "skipped" in kinds:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result


def main():
    suite, direct_xml, gateway_xml = sys.argv[1:4]
    direct, gateway = outcomes(direct_xml), outcomes(gateway_xml)
    count = lambda d, k: sum(1 for v in d.values() if v == k)  # noqa: E731
    print(
        f"{suite}: direct {count(direct, 'passed')} passed, {count(direct, 'failed')} failed, "
        f"{count(direct, 'skipped')} skipped; through tollgate {count(gateway, 'passed')} passed, "
        f"{count(gateway, 'failed')} failed, {count(gateway, 'skipped')} skipped"
    )
    explained = elsewhere = unexplained = 0
    find = lambda table, name: next(  # noqa: E731
        (why for s, pattern, why in table if s == suite and re.search(pattern, name)), None
    )
    for name in sorted(direct):
        if direct[name] != "passed" or gateway.get(name) == "passed":
            continue
        got = gateway.get(name, "missing")
        if reason := find(DELIBERATE, name):
            explained += 1
            print(f"  deliberate  {name} ({got}): {reason}")
        elif reason := find(ELSEWHERE, name):
            elsewhere += 1
            print(f"  elsewhere   {name} ({got}): {reason}")
        else:
            unexplained += 1
            print(f"  DIFFERENT   {name} ({got})")
    better = [n for n in gateway if gateway[n] == "passed" and direct.get(n) != "passed"]
    for name in better:
        print(f"  only through tollgate: {name} (direct: {direct.get(name, 'missing')})")
    print(
        f"{suite}: {explained} deliberate refusals, {elsewhere} left to other work, "
        f"{unexplained} unexplained differences"
    )
    print(f"{suite}: {count(direct, 'passed') - unexplained} passed, {unexplained} failed")
    sys.exit(1 if unexplained else 0)


if __name__ == "__main__":
    main()
