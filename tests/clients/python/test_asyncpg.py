"""asyncpg through tollgate: connect (and its type introspection), prepared statements and
cursors, binary codecs, copy_* (writer), pools (reset query on release), masking and refusals
(asyncpg.exceptions.InsufficientPrivilegeError, 42501)."""

import asyncio
import datetime
import decimal
import io
import uuid

import asyncpg

from common import assert_masked_customer, assert_policy_message, case, env, run

ANALYST = env("TOLLGATE_PG_ANALYST_URL")
WRITER = env("TOLLGATE_PG_WRITER_URL")
MARK = decimal.Decimal("8765.43")


def arun(coro_fn):
    """Registers an async case."""

    def wrapper():
        asyncio.run(coro_fn())

    wrapper.__name__ = coro_fn.__name__
    return case(wrapper)


@arun
async def connect_and_fetch_masked():
    conn = await asyncpg.connect(ANALYST)
    try:
        rows = await conn.fetch(
            "SELECT id, email, phone, ssn FROM customers WHERE id <= $1 ORDER BY id", 25
        )
        assert len(rows) == 25
        for r in rows:
            assert_masked_customer(r["email"], r["phone"], r["ssn"])
        assert await conn.fetchval("SELECT count(*) FROM orders") >= 50000
        settings = conn.get_settings()
        assert settings.server_version, "no server_version ParameterStatus"
    finally:
        await conn.close()


@arun
async def introspection_of_unknown_types():
    # information_schema columns are domains (sql_identifier, cardinal_number): asyncpg does
    # not know them and runs its type introspection query (pg_type, pg_range, ...) first.
    conn = await asyncpg.connect(ANALYST)
    try:
        rows = await conn.fetch(
            "SELECT column_name, ordinal_position, data_type FROM information_schema.columns "
            "WHERE table_name = 'orders' ORDER BY ordinal_position"
        )
        assert [r["column_name"] for r in rows] == ["id", "customer_id", "amount", "created_at"]
        assert isinstance(rows[0]["column_name"], str) and rows[0]["ordinal_position"] == 1
    finally:
        await conn.close()


@arun
async def prepared_statements_and_cursor():
    conn = await asyncpg.connect(ANALYST)
    try:
        stmt = await conn.prepare("SELECT id, email, region FROM customers WHERE id = $1")
        assert [a.name for a in stmt.get_attributes()] == ["id", "email", "region"]
        assert [t.name for t in stmt.get_parameters()] == ["int8"]
        for i in range(1, 12):
            row = await stmt.fetchrow(i)
            assert row["id"] == i
            assert_masked_customer(row["email"], None, None)
        async with conn.transaction():
            n = 0
            async for rec in conn.cursor("SELECT id, ssn FROM customers ORDER BY id", prefetch=100):
                assert rec["ssn"] is None or rec["ssn"] == "REDACTED"
                n += 1
                if n == 350:
                    break
            cur = await conn.cursor("SELECT id FROM orders ORDER BY id")
            await cur.forward(10)
            assert (await cur.fetchrow())["id"] == 11
            assert [r["id"] for r in await cur.fetch(3)] == [12, 13, 14]
        try:
            await conn.prepare("SELECT api_key FROM secrets")
        except asyncpg.exceptions.InsufficientPrivilegeError as e:
            assert e.sqlstate == "42501"
            assert_policy_message(e.message, "secrets")
        else:
            raise AssertionError("prepare over secrets not refused")
        assert await stmt.fetchval(7) == 7
    finally:
        await conn.close()


@arun
async def binary_codecs():
    conn = await asyncpg.connect(ANALYST)
    try:
        row = await conn.fetchrow(
            "SELECT 1.25::numeric AS n, '2024-02-29 12:00+00'::timestamptz AS ts, "
            "'2024-02-29'::date AS d, '1 day 2 hours'::interval AS iv, "
            "ARRAY[1,2,3]::int4[] AS arr, '{\"a\": [1, 2]}'::jsonb AS j, "
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '\\xdeadbeef'::bytea AS b, "
            "true AS t, 3.5::float8 AS f, $1::text AS p",
            "param",
        )
        assert row["n"] == decimal.Decimal("1.25")
        assert row["ts"] == datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.timezone.utc)
        assert row["d"] == datetime.date(2024, 2, 29)
        assert row["iv"] == datetime.timedelta(days=1, hours=2)
        assert row["arr"] == [1, 2, 3]
        assert row["j"] == '{"a": [1, 2]}'
        assert row["u"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        assert row["b"] == b"\xde\xad\xbe\xef"
        assert row["t"] is True and row["f"] == 3.5 and row["p"] == "param"
        amount, created = await conn.fetchrow(
            "SELECT amount, created_at FROM orders WHERE id = $1", 3
        )
        assert isinstance(amount, decimal.Decimal) and isinstance(created, datetime.datetime)
    finally:
        await conn.close()


@arun
async def copy_writer():
    conn = await asyncpg.connect(WRITER)
    try:
        res = await conn.copy_records_to_table(
            "orders", records=[(i, MARK) for i in range(1, 41)], columns=["customer_id", "amount"]
        )
        assert res == "COPY 40", res
        data = io.BytesIO("".join(f"{i}\t{MARK}\n" for i in range(1, 11)).encode())
        res = await conn.copy_to_table("orders", source=data, columns=["customer_id", "amount"])
        assert res == "COPY 10", res
        out = io.BytesIO()
        res = await conn.copy_from_query(
            "SELECT id, email, phone, ssn FROM customers WHERE id <= $1 ORDER BY id", 20,
            output=out, format="csv",
        )
        assert res == "COPY 20", res
        lines = out.getvalue().decode().splitlines()
        assert len(lines) == 20
        for line in lines:
            _id, email, phone, ssn = line.split(",")
            assert_masked_customer(email, phone or None, ssn or None)
        out = io.BytesIO()
        res = await conn.copy_from_table("orders", output=out, columns=["id", "amount"])
        assert int(res.split()[1]) >= 50050, res
        try:
            await conn.copy_from_table("secrets", output=io.BytesIO())
        except asyncpg.exceptions.InsufficientPrivilegeError as e:
            assert_policy_message(e.message, "secrets")
        else:
            raise AssertionError("copy_from_table(secrets) not refused")
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE amount = $1", MARK) == 50
        await conn.executemany(
            "UPDATE orders SET amount = $1 WHERE id = $2", [(MARK, 1), (MARK, 2)]
        )
        await conn.execute("UPDATE orders SET amount = 1 WHERE id IN (1, 2)")
        await conn.execute("DELETE FROM orders WHERE amount = $1", MARK)
    finally:
        await conn.close()


@arun
async def pool_acquire_release():
    pool = await asyncpg.create_pool(ANALYST, min_size=1, max_size=2)
    try:
        for i in range(1, 6):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT id FROM customers WHERE id = $1", i) == i
        async with pool.acquire() as c1, pool.acquire() as c2:
            a, b = await asyncio.gather(
                c1.fetchval("SELECT count(*) FROM customers"), c2.fetchval("SELECT count(*) FROM orders")
            )
            assert a == 5000 and b >= 50000
    finally:
        await asyncio.wait_for(pool.close(), 10)


@arun
async def refusals():
    conn = await asyncpg.connect(ANALYST)
    try:
        for stmt, what in [
            ("SELECT * FROM secrets", "secrets"),
            ("DELETE FROM orders", "orders"),
        ]:
            try:
                await conn.execute(stmt)
            except asyncpg.exceptions.InsufficientPrivilegeError as e:
                assert e.sqlstate == "42501"
                assert_policy_message(e.message, what)
                assert e.as_dict().get("hint"), e.as_dict()
            else:
                raise AssertionError(f"not refused: {stmt}")
        try:
            async with conn.transaction():
                await conn.fetch("SELECT 1")
                await conn.fetch("SELECT api_key FROM secrets")
        except asyncpg.exceptions.InsufficientPrivilegeError:
            pass
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


if __name__ == "__main__":
    run(f"asyncpg {asyncpg.__version__}")
