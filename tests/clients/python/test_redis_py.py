"""redis-py through tollgate's Redis listener: RESP2 and RESP3, AUTH with agent tokens,
session email masked, refusals as redis.exceptions.NoPermissionError (-NOPERM with the rule),
pipelines (plain and MULTI/EXEC), pub/sub (RESP2 messages and RESP3 push frames)."""

import threading
import time
import urllib.parse

import redis
from redis.exceptions import NoPermissionError, ResponseError

from common import EMAIL_MASK, assert_policy_message, case, env, run

ANALYST = env("TOLLGATE_REDIS_ANALYST_URL")
WRITER = env("TOLLGATE_REDIS_WRITER_URL")
TRUSTED = env("TOLLGATE_REDIS_TRUSTED_URL")


def client(url, protocol):
    return redis.Redis.from_url(url, protocol=protocol, decode_responses=True, socket_timeout=10)


def expect_noperm(fn, what=None):
    try:
        fn()
    except NoPermissionError as e:
        assert_policy_message(str(e), what)
    else:
        raise AssertionError("command was not refused")


def reads_and_masking(protocol):
    r = client(ANALYST, protocol)
    try:
        assert r.ping()
        assert r.get("cache:1") == "cached value 1"
        assert r.mget("cache:1", "cache:2") == ["cached value 1", "cached value 2"]
        h = r.hgetall("session:1")
        assert isinstance(h, dict) and h["user"] == "user1", h
        assert EMAIL_MASK.match(h["email"]), h
        assert EMAIL_MASK.match(r.hget("session:1", "email"))
        assert r.hmget("session:2", ["user", "email"])[1].startswith("***@")
        assert r.exists("cache:3") == 1
        assert r.ttl("cache:3") in (-1,) or r.ttl("cache:3") > 0
        expect_noperm(lambda: r.get("admin:config"), "admin:config")
        expect_noperm(lambda: r.flushall(), "dangerous")
        expect_noperm(lambda: r.set("cache:1", "x"))
        expect_noperm(lambda: r.config_get("*"))
        # the connection stays usable after refusals
        assert r.get("cache:2") == "cached value 2"
    finally:
        r.close()


@case
def resp2_reads_masking_refusals():
    reads_and_masking(2)


@case
def resp3_reads_masking_refusals():
    reads_and_masking(3)


@case
def pipelines():
    for protocol in (2, 3):
        w = client(WRITER, protocol)
        try:
            p = w.pipeline(transaction=False)
            for i in range(50):
                p.set(f"cache:rp{protocol}:{i}", i)
            p.incr(f"cache:rp{protocol}:0")
            p.get(f"cache:rp{protocol}:0")
            out = p.execute()
            assert out[:50] == [True] * 50 and out[50:] == [1, "1"], out[48:]
            with w.pipeline(transaction=True) as t:
                t.set(f"cache:tx{protocol}", "a").append(f"cache:tx{protocol}", "b")
                t.get(f"cache:tx{protocol}")
                assert t.execute() == [True, 2, "ab"]
            # a refused command inside MULTI aborts the transaction (EXECABORT)
            try:
                with w.pipeline(transaction=True) as t:
                    t.set(f"cache:tx{protocol}", "c").set("admin:x", "1")
                    t.execute()
            except (ResponseError, NoPermissionError) as e:
                assert "EXECABORT" in str(e) or "NOPERM" in str(e) or "tollgate" in str(e), e
            else:
                raise AssertionError("MULTI with a refused command was not aborted")
            assert w.get(f"cache:tx{protocol}") == "ab"
            # a refused command in a plain pipeline fails alone, in its slot
            p = w.pipeline(transaction=False)
            p.get(f"cache:tx{protocol}").get("admin:config").get(f"cache:rp{protocol}:1")
            res = p.execute(raise_on_error=False)
            assert res[0] == "ab" and res[2] == "1", res
            assert isinstance(res[1], NoPermissionError), res
            assert_policy_message(str(res[1]), "admin:config")
            w.delete(*[f"cache:rp{protocol}:{i}" for i in range(50)], f"cache:tx{protocol}")
        finally:
            w.close()
    a = client(ANALYST, 2)
    try:
        p = a.pipeline(transaction=False)
        for i in range(1, 101):
            p.get(f"cache:{i}")
        p.hgetall("session:5")
        out = p.execute()
        assert out[0] == "cached value 1" and out[99] == "cached value 100"
        assert EMAIL_MASK.match(out[100]["email"])
    finally:
        a.close()


def pubsub_roundtrip(protocol):
    sub = client(ANALYST, protocol)
    pub = client(TRUSTED, protocol)
    ps = sub.pubsub()
    try:
        ps.subscribe(f"news.p{protocol}")
        ps.psubscribe("news.*")
        confirmations = []
        deadline = time.monotonic() + 5
        while len(confirmations) < 2 and time.monotonic() < deadline:
            m = ps.get_message(timeout=1)
            if m:
                confirmations.append(m["type"])
        assert sorted(confirmations) == ["psubscribe", "subscribe"], confirmations
        receivers = pub.publish(f"news.p{protocol}", "hello")
        assert receivers == 2, receivers
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            m = ps.get_message(timeout=1)
            if m:
                got.append((m["type"], m["channel"], m["data"]))
        assert sorted(got) == [
            ("message", f"news.p{protocol}", "hello"),
            ("pmessage", f"news.p{protocol}", "hello"),
        ], got
        ps.unsubscribe()
        ps.punsubscribe()
        # channels outside news.* are refused
        try:
            ps.subscribe("admin-alerts")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ps.get_message(timeout=1)
            raise AssertionError("SUBSCRIBE admin-alerts not refused")
        except NoPermissionError as e:
            assert_policy_message(str(e))
    finally:
        ps.close()
        sub.close()
        pub.close()


@case
def pubsub_resp2():
    pubsub_roundtrip(2)


@case
def pubsub_resp3():
    pubsub_roundtrip(3)


@case
def pubsub_thread_with_analyst_subscribed():
    sub = client(ANALYST, 2)
    ps = sub.pubsub(ignore_subscribe_messages=True)
    got = []
    ps.subscribe(**{"news.thread": lambda m: got.append(m["data"])})
    t = ps.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        a = client(TRUSTED, 2)
        time.sleep(0.2)
        # The analyst only listens: its PUBLISH is refused.
        listener = client(ANALYST, 2)
        try:
            listener.publish("news.thread", "from analyst")
            raise AssertionError("analyst PUBLISH was not refused")
        except NoPermissionError:
            pass
        finally:
            listener.close()
        for i in range(3):
            a.publish("news.thread", f"m{i}")
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == ["m0", "m1", "m2"], got
        a.close()
    finally:
        t.stop()
        t.join(5)
        ps.close()
        sub.close()


@case
def config_get_set_round_trip_without_secrets():
    r = client(TRUSTED, 2)
    try:
        conf = r.config_get("*")
        assert "maxclients" in conf and "requirepass" not in conf and "masterauth" not in conf
        before = r.config_get("maxmemory-policy")["maxmemory-policy"]
        assert r.config_set("maxmemory-policy", "allkeys-lru")
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert r.config_set("maxmemory-policy", before)
        expect_noperm(lambda: r.config_set("requirepass", "x"), "builtin: vault-login")
        expect_noperm(lambda: r.execute_command("ACL", "SETUSER", "default", "off"), "builtin: vault-login")
        # every agent keeps working
        for url in (ANALYST, WRITER, TRUSTED):
            other = client(url, 2)
            assert other.ping()
            other.close()
    finally:
        r.close()


@case
def reset_logs_the_client_out_and_the_upstream_back_in():
    # RESET returns the connection to RESP2 (as Redis does): a RESP3 client could not read on.
    # As Redis does with a password, it logs the client out until it sends AUTH again.
    r = redis.Redis.from_url(
        TRUSTED, protocol=2, decode_responses=True, single_connection_client=True
    )
    try:
        r.execute_command("SELECT", 2)
        r.client_setname("fidelity")
        assert r.execute_command("RESET") == "RESET"
        try:
            r.client_getname()
            raise AssertionError("a command after RESET ran without AUTH")
        except redis.exceptions.AuthenticationError:
            pass
        user, token = urllib.parse.urlparse(TRUSTED).username, urllib.parse.urlparse(TRUSTED).password
        assert r.execute_command("AUTH", user, token)
        assert r.client_getname() is None
        assert r.set("fidelity:reset", "db0") and r.get("fidelity:reset") == "db0"
        r.delete("fidelity:reset")
    finally:
        r.close()


@case
def client_kill_own_and_foreign_connections():
    me = redis.Redis.from_url(TRUSTED, decode_responses=True, single_connection_client=True)
    mine = redis.Redis.from_url(TRUSTED, decode_responses=True, single_connection_client=True)
    theirs = redis.Redis.from_url(ANALYST, decode_responses=True, single_connection_client=True)
    try:
        own_id, foreign_id = mine.client_id(), theirs.client_id()
        listed = {c["id"] for c in me.client_list()}
        assert str(own_id) in listed and str(foreign_id) not in listed, listed
        assert me.client_kill_filter(_id=foreign_id) == 0
        assert theirs.ping(), "the analyst's connection is not this agent's to kill"
        assert me.client_kill_filter(_id=own_id) == 1
        try:
            mine.ping()
        except redis.exceptions.ConnectionError:
            pass
        except ResponseError as e:
            # tollgate says why before it closes the session (docs/clients.md)
            assert "connection to upstream" in str(e), str(e)
        else:
            raise AssertionError("the killed connection still answers")
    finally:
        for c in (me, mine, theirs):
            c.close()


if __name__ == "__main__":
    threading.excepthook = lambda args: print("thread error:", args.exc_value)
    run(f"redis-py {redis.__version__}")
