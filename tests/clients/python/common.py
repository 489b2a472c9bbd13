"""Tiny harness shared by the Python client programs in tests/clients.

Each program registers cases with @case; run() executes every case (one failure does not hide
the next), prints `ok`/`FAIL` per case and exits 1 if any failed. Connection URLs come from the
environment written by `tollgate demo --env-file` (tests/clients/run.sh exports them).
"""

import os
import re
import sys
import time
import traceback

CASES = []

EMAIL_MASK = re.compile(r"^\*\*\*@example\.(org|net|com)$")
PHONE_MASK = re.compile(r"^\*\*\*\d{4}$")


def env(key):
    value = os.environ.get(key)
    if not value:
        raise SystemExit(f"{key} is not set (run through tests/clients/run.sh)")
    return value


def case(fn):
    CASES.append(fn)
    return fn


def assert_masked_customer(email, phone, ssn):
    assert EMAIL_MASK.match(email), f"email not masked: {email!r}"
    assert phone is None or PHONE_MASK.match(phone), f"phone not masked: {phone!r}"
    assert ssn is None or ssn == "REDACTED", f"ssn not masked: {ssn!r}"


def assert_policy_message(text, what=None):
    """The refusal text tollgate writes: `tollgate: ... (rule: NAME)`."""
    assert "tollgate:" in text, f"not a tollgate refusal: {text!r}"
    assert re.search(r"\((tollgate )?rule: [^)]+\)", text), f"refusal does not name its rule: {text!r}"
    if what is not None:
        assert what in text, f"refusal does not mention {what!r}: {text!r}"


def run(title):
    failed = 0
    for fn in CASES:
        start = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - every failure is reported, then the next case runs
            failed += 1
            print(f"FAIL {title}: {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"ok   {title}: {fn.__name__} ({time.monotonic() - start:.2f}s)")
        sys.stdout.flush()
    print(f"{title}: {len(CASES) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
