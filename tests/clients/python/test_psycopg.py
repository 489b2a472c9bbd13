"""psycopg 3 through tollgate: text and binary results, server-side cursors, executemany,
pipeline mode, COPY (text and binary), transactions with savepoints, prepared statements after
the prepare threshold, masking and refusals (psycopg.errors.InsufficientPrivilege, 42501), and
backend identity (the pid of BackendKeyData, pg_backend_pid() and notifications; signals)."""

import datetime
import decimal
import time

import psycopg
from psycopg import errors, sql

from common import (
    assert_masked_customer,
    assert_policy_message,
    case,
    env,
    run,
)

ANALYST = env("TOLLGATE_PG_ANALYST_URL")
WRITER = env("TOLLGATE_PG_WRITER_URL")
TRUSTED = env("TOLLGATE_PG_TRUSTED_URL")
MARK = decimal.Decimal("9876.54")  # amount of the rows this program writes (cleaned up at the end)


def connect(url, **kw):
    return psycopg.connect(url, **kw)


@case
def text_results_masked():
    with connect(ANALYST) as conn:
        rows = conn.execute(
            "SELECT id, name, email, phone, ssn, region FROM customers ORDER BY id LIMIT 20"
        ).fetchall()
        assert len(rows) == 20
        for _id, name, email, phone, ssn, region in rows:
            assert name and region
            assert_masked_customer(email, phone, ssn)
        # masked whatever the SQL: SELECT *, an alias, an expression
        (email,) = conn.execute("SELECT c.email FROM customers AS c WHERE c.id = %s", [1]).fetchone()
        assert_masked_customer(email, None, None)
        (upper,) = conn.execute("SELECT upper(email) FROM customers WHERE id = 2").fetchone()
        assert upper.startswith("***@EXAMPLE."), upper
        row = conn.execute("SELECT * FROM orders WHERE id = 1").fetchone()
        assert isinstance(row[2], decimal.Decimal) and isinstance(row[3], datetime.datetime)


@case
def binary_results_masked():
    with connect(ANALYST) as conn:
        cur = conn.cursor(binary=True)
        cur.execute(
            "SELECT id, email, phone, ssn FROM customers WHERE id = ANY(%s) ORDER BY id",
            [[1, 2, 3]],
        )
        rows = cur.fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert cur.pgresult.fformat(0) == 1, "expected binary result format"
        for _id, email, phone, ssn in rows:
            assert_masked_customer(email, phone, ssn)
        cur.execute(
            "SELECT amount, created_at, customer_id FROM orders WHERE id = %s", [5], binary=True
        )
        amount, created, cust = cur.fetchone()
        assert isinstance(amount, decimal.Decimal) and isinstance(created, datetime.datetime)
        assert isinstance(cust, int)


@case
def server_side_cursor():
    with connect(ANALYST) as conn:
        with conn.transaction():
            with conn.cursor(name="big_orders") as cur:
                cur.itersize = 200
                cur.execute("SELECT id, amount FROM orders WHERE id <= 900 ORDER BY id")
                ids = [r[0] for r in cur]
                assert ids == list(range(1, 901)), (len(ids), ids[:5])
            with conn.cursor(name="masked_cust", scrollable=True) as cur:
                cur.execute("SELECT id, email, phone, ssn FROM customers ORDER BY id")
                first = cur.fetchmany(50)
                assert len(first) == 50
                for _id, email, phone, ssn in first:
                    assert_masked_customer(email, phone, ssn)
                cur.scroll(0, mode="absolute")
                assert cur.fetchone()[0] == 1


@case
def server_side_cursor_refused():
    with connect(ANALYST) as conn:
        cur = conn.cursor(name="nope")
        try:
            cur.execute("SELECT api_key FROM secrets")
            cur.fetchall()
        except errors.InsufficientPrivilege as e:
            assert e.sqlstate == "42501"
            assert_policy_message(e.diag.message_primary, "secrets")
        else:
            raise AssertionError("DECLARE over secrets was not refused")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


@case
def executemany_writer():
    with connect(WRITER) as conn:
        with conn.cursor() as cur:
            params = [(i, MARK) for i in range(1, 11)]
            cur.executemany(
                "INSERT INTO orders (customer_id, amount) VALUES (%s, %s) RETURNING id",
                params,
                returning=True,
            )
            ids = []
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            assert len(ids) == 10 and len(set(ids)) == 10, ids
            cur.executemany("UPDATE orders SET amount = %s WHERE id = %s", [(MARK, i) for i in ids])
            assert cur.rowcount == 10, cur.rowcount
        conn.commit()
        (n,) = conn.execute("SELECT count(*) FROM orders WHERE amount = %s", [MARK]).fetchone()
        assert n >= 10


@case
def pipeline_mode():
    with connect(ANALYST) as conn:
        with conn.pipeline():
            c1 = conn.execute("SELECT count(*) FROM customers")
            c2 = conn.execute("SELECT email FROM customers WHERE id = %s", [3])
            c3 = conn.execute("SELECT max(id) FROM orders")
        assert c1.fetchone()[0] == 5000
        assert_masked_customer(c2.fetchone()[0], None, None)
        assert c3.fetchone()[0] >= 50000
        # A refusal inside a pipeline raises the normal error; the session stays usable.
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT api_key FROM secrets")
                conn.execute("SELECT 2")
        except errors.InsufficientPrivilege as e:
            assert e.sqlstate == "42501"
            assert_policy_message(e.diag.message_primary, "secrets")
        else:
            raise AssertionError("refusal in pipeline not raised")
        conn.rollback()
        assert conn.execute("SELECT 3").fetchone() == (3,)


@case
def copy_writer():
    with connect(WRITER) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY orders (customer_id, amount) FROM STDIN") as copy:
                for i in range(1, 101):
                    copy.write_row((i, MARK))
            assert cur.rowcount == 100, cur.rowcount
            with cur.copy(
                "COPY orders (customer_id, amount) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["bigint", "numeric"])
                for i in range(1, 51):
                    copy.write_row((i, MARK))
            rows = []
            with cur.copy(
                "COPY (SELECT id, email, phone, ssn FROM customers ORDER BY id LIMIT 30) TO STDOUT"
            ) as copy:
                for row in copy.rows():
                    rows.append(row)
            assert len(rows) == 30
            for _id, email, phone, ssn in rows:
                assert_masked_customer(email, phone, ssn)
            with cur.copy("COPY customers (id, email) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(["bigint", "text"])
                got = list(copy.rows())
            assert len(got) == 5000
            for _id, email in got[:100]:
                assert_masked_customer(email, None, None)
        conn.commit()
        try:
            conn.execute("COPY secrets TO STDOUT")
        except errors.InsufficientPrivilege as e:
            assert_policy_message(e.diag.message_primary, "secrets")
        else:
            raise AssertionError("COPY secrets not refused")


@case
def transactions_and_savepoints():
    with connect(WRITER) as conn:
        (before,) = conn.execute("SELECT count(*) FROM orders WHERE amount = %s", [MARK]).fetchone()
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO orders (customer_id, amount) VALUES (1, %s)", [MARK])
            try:
                with conn.transaction():  # SAVEPOINT
                    conn.execute("INSERT INTO orders (customer_id, amount) VALUES (2, %s)", [MARK])
                    conn.execute("UPDATE customers SET name = 'x' WHERE id = 1")
            except errors.InsufficientPrivilege as e:
                assert e.sqlstate == "42501"
                assert_policy_message(e.diag.message_primary, "customers")
            else:
                raise AssertionError("UPDATE customers not refused for writer")
            # rolled back to the savepoint: the outer transaction goes on
            conn.execute("INSERT INTO orders (customer_id, amount) VALUES (3, %s)", [MARK])
            with conn.transaction(force_rollback=True):
                conn.execute("DELETE FROM orders WHERE amount = %s", [MARK])
        (after,) = conn.execute("SELECT count(*) FROM orders WHERE amount = %s", [MARK]).fetchone()
        assert after == before + 2, (before, after)
        conn.commit()
        # a refusal outside a savepoint aborts the transaction like any error
        conn.execute("SELECT 1")
        try:
            conn.execute("SELECT api_key FROM secrets")
        except errors.InsufficientPrivilege:
            pass
        try:
            conn.execute("SELECT 1")
        except errors.InFailedSqlTransaction:
            pass
        else:
            raise AssertionError("transaction not aborted after refusal")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


@case
def prepared_after_threshold():
    with connect(ANALYST, autocommit=True) as conn:
        assert conn.prepare_threshold == 5
        query = "SELECT id, email FROM customers WHERE id = %s"
        for i in range(1, 9):
            row = conn.execute(query, [i]).fetchone()
            assert row[0] == i
            assert_masked_customer(row[1], None, None)
        # psycopg prepares a statement once it has run prepare_threshold times; by now it
        # must have done so (named Parse/Bind/Execute through the gateway) and rows stay masked.
        names = [n for n in conn._prepared._names.values()]  # noqa: SLF001
        assert names, "psycopg did not prepare the statement"
        # the prepared statement keeps working (and masking) on later executions
        for i in (10, 11, 12):
            assert_masked_customer(conn.execute(query, [i]).fetchone()[1], None, None)
        # pg_prepared_statements would show it upstream, but tollgate refuses that catalog
        # view (it shows statement texts): see docs/clients.md
        try:
            conn.execute("SELECT count(*) FROM pg_prepared_statements")
        except errors.InsufficientPrivilege as e:
            assert_policy_message(e.diag.message_primary, "pg_prepared_statements")
        else:
            raise AssertionError("pg_prepared_statements was allowed; update docs/clients.md")
        # explicit prepare=True, refused statement: the error surfaces at execute
        try:
            conn.execute("SELECT api_key FROM secrets WHERE id = %s", [1], prepare=True)
        except errors.InsufficientPrivilege as e:
            assert_policy_message(e.diag.message_primary, "secrets")
        else:
            raise AssertionError("prepared SELECT on secrets not refused")
        assert conn.execute(query, [42]).fetchone()[0] == 42


@case
def refusals_and_limits():
    with connect(ANALYST, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for stmt, what in [
            ("SELECT * FROM secrets", "secrets"),
            ("INSERT INTO orders (customer_id, amount) VALUES (1, 1)", "orders"),
            ("DROP TABLE orders", None),
        ]:
            try:
                conn.execute(stmt)
            except errors.InsufficientPrivilege as e:
                assert e.sqlstate == "42501"
                assert_policy_message(e.diag.message_primary, what)
            else:
                raise AssertionError(f"not refused: {stmt}")
        rows = conn.execute("SELECT id FROM orders").fetchall()
        assert len(rows) == 1000, len(rows)
        assert any("truncated to 1000 rows" in n for n in notices), notices
        q = sql.SQL("SELECT {} FROM {} WHERE id = 1").format(
            sql.Identifier("email"), sql.Identifier("customers")
        )
        assert_masked_customer(conn.execute(q).fetchone()[0], None, None)


@case
def named_cursor_limit_holds_across_fetches():
    # psycopg's server-side cursor is DECLARE + FETCH FORWARD n: each FETCH is a statement of
    # its own, and max_rows (1000 for the analyst) holds for the cursor as a whole.
    with connect(ANALYST) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with conn.transaction():
            with conn.cursor(name="all_orders") as cur:
                cur.itersize = 300
                cur.execute("SELECT id FROM orders ORDER BY id")
                ids = [r[0] for r in cur]
        assert ids == list(range(1, 1001)), (len(ids), ids[-3:])
        assert any("truncated to 1000 rows" in n for n in notices), notices
        # WITH HOLD (psycopg's withhold=True) outlives the transaction, and so does its count.
        with conn.cursor(name="held", withhold=True) as cur:
            cur.execute("SELECT id FROM orders ORDER BY id")
            conn.commit()
            first = cur.fetchmany(700)
            rest = cur.fetchall()
        assert (len(first), len(rest)) == (700, 300), (len(first), len(rest))


@case
def refusal_hints_say_what_the_agent_may_use():
    with connect(ANALYST, autocommit=True) as conn:
        try:
            conn.execute("SELECT * FROM secrets")
        except errors.InsufficientPrivilege as e:
            hint = e.diag.message_hint or ""
            assert hint.startswith('allowed on "shop": public.customers (select; masked: email, phone, ssn)'), hint
            assert "tollgate explain" not in hint
        else:
            raise AssertionError("secrets not refused")


@case
def client_encodings():
    # (encoding, text in it): queries, parameters, masked rows and refusals all in the
    # session's encoding; the server converts, tollgate decodes exactly what the server reads.
    for encoding, word in [
        ("LATIN1", "café"),
        ("LATIN9", "€uro"),
        ("WIN1252", "“quoted”"),
        ("EUC_JP", "あいう"),
    ]:
        with connect(ANALYST, autocommit=True, client_encoding=encoding) as conn:
            assert conn.execute("SHOW client_encoding").fetchone() == (encoding,)
            assert conn.execute(f"SELECT '{word}'::text").fetchone() == (word,)
            assert conn.execute("SELECT %s::text", [word]).fetchone() == (word,)
            rows = conn.execute(
                f"SELECT email, phone, ssn FROM customers WHERE name <> '{word}' ORDER BY id LIMIT 5"
            ).fetchall()
            assert len(rows) == 5
            for email, phone, ssn in rows:
                assert_masked_customer(email, phone, ssn)
            try:
                conn.execute(f'SELECT * FROM "{word}"')
            except errors.InsufficientPrivilege as e:
                # psycopg decodes the message in the session's encoding: tollgate wrote it so.
                assert_policy_message(e.diag.message_primary, word)
            else:
                raise AssertionError(f"{encoding}: the unknown table was not refused")
    # Encodings in which an ASCII byte can be part of a multibyte character are refused.
    try:
        connect(ANALYST, client_encoding="SJIS").close()
    except psycopg.OperationalError as e:
        assert "multibyte" in str(e), str(e)
    else:
        raise AssertionError("SJIS was accepted at startup")
    with connect(TRUSTED, autocommit=True) as conn:
        try:
            conn.execute("SET client_encoding TO 'BIG5'")
        except errors.InsufficientPrivilege as e:
            assert_policy_message(e.diag.message_primary, "multibyte")
        else:
            raise AssertionError("BIG5 was accepted by SET")


@case
def the_vaulted_login_is_untouchable():
    with connect(TRUSTED, autocommit=True) as conn:
        for stmt in [
            "ALTER ROLE CURRENT_USER PASSWORD 'x'",
            "ALTER DATABASE shop CONNECTION LIMIT 0",
        ]:
            try:
                conn.execute(stmt)
            except errors.InsufficientPrivilege as e:
                assert_policy_message(e.diag.message_primary, "builtin: vault-login")
            else:
                raise AssertionError(f"not refused: {stmt}")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    for url in (ANALYST, WRITER, TRUSTED):
        with connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM orders WHERE id <= 3").fetchone() == (3,)


@case
def backend_identity():
    # Session pooling (the trusted agent): the process id psycopg was shown (BackendKeyData),
    # pg_backend_pid() and the sender of notifications agree, as they do direct.
    with connect(TRUSTED, autocommit=True) as listener, connect(TRUSTED, autocommit=True) as notifier:
        pid = listener.info.backend_pid
        assert listener.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
        got = []
        listener.add_notify_handler(lambda n: got.append((n.payload, n.pid)))
        listener.execute("LISTEN tollgate_identity")
        listener.execute("NOTIFY tollgate_identity, 'self'")
        notifier.execute("NOTIFY tollgate_identity, 'other'")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            listener.execute("SELECT 1")
        assert sorted(got) == [("other", notifier.info.backend_pid), ("self", pid)], got
        # Another agent's backend is refused; the session goes on.
        with connect(ANALYST) as analyst:
            other = analyst.info.backend_pid
            try:
                listener.execute("SELECT pg_terminate_backend(%s)", [other])
            except errors.InsufficientPrivilege as e:
                assert_policy_message(e.diag.message_primary, "builtin: own-backend")
            else:
                raise AssertionError("another agent's backend was signalled")
            assert analyst.execute("SELECT count(*) FROM orders WHERE id = 1").fetchone() == (1,)
        # Terminating one's own backend ends the session with the server's error.
        try:
            notifier.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        except errors.AdminShutdown:
            pass
        else:
            raise AssertionError("the session survived its own termination")
        assert notifier.closed
        assert listener.execute("SELECT 1").fetchone() == (1,)
    # Transaction pooling (the analyst): the id psycopg was shown is tollgate's own, and
    # pg_backend_pid(), which would name a shared connection, is refused naming the rule.
    with connect(ANALYST) as conn:
        try:
            conn.execute("SELECT pg_backend_pid()")
        except errors.FeatureNotSupported as e:
            assert_policy_message(e.diag.message_primary, "builtin: transaction-pooling")
        else:
            raise AssertionError("pg_backend_pid() answered under transaction pooling")


@case
def cleanup():
    with connect(WRITER, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE amount = %s", [MARK])


if __name__ == "__main__":
    run(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} {psycopg.pq.version()})")
