"""While a driver suite runs through the trusted agent, the other agents keep being served:
every half second the analyst and the writer each open a new PostgreSQL session and a new Redis
connection and run a statement. Prints one line per failure and, at the end (SIGTERM), the
totals: `probes: N, failures: M`."""

import os
import signal
import sys
import time

import psycopg2
import redis

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

probes = failures = 0
checks = []
for agent in ("ANALYST", "WRITER"):
    pg_url = os.environ[f"TOLLGATE_PG_{agent}_URL"]
    redis_url = os.environ[f"TOLLGATE_REDIS_{agent}_URL"]

    def pg(url=pg_url):
        with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders WHERE id <= 5")
            assert cur.fetchone() == (5,)
        conn.close()

    def rd(url=redis_url):
        # Served, whatever the suite did to the data (FLUSHALL is the passthrough agent's right).
        r = redis.Redis.from_url(url, socket_timeout=5)
        try:
            assert r.ping()
            r.get("cache:1")
        finally:
            r.close()

    checks += [(f"{agent.lower()} postgres", pg), (f"{agent.lower()} redis", rd)]

while not stop:
    for name, check in checks:
        probes += 1
        try:
            check()
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            failures += 1
            print(f"{time.strftime('%H:%M:%S')} FAIL {name}: {type(e).__name__}: {e}", flush=True)
    time.sleep(0.5)
print(f"probes: {probes}, failures: {failures}", flush=True)
sys.exit(0)
