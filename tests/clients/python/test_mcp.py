"""The official MCP Python SDK (`mcp`) against tollgate's MCP endpoint, from the demo's env file:
Streamable HTTP with the agent's bearer, tools per agent, every tool called, masking, refusals
naming their rule, writes, the result-size cap, the MongoDB `find`/`aggregate` tools, 401 for
wrong or missing tokens, audit records with protocol `mcp`, and the same session through
`tollgate mcp-stdio` (stdio transport)."""

import asyncio
import json
import os
import time

import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from common import EMAIL_MASK, assert_policy_message, case, env, run

URL = env("TOLLGATE_MCP_URL")
TOKENS = {a: env(f"TOLLGATE_MCP_{a.upper()}_TOKEN") for a in ("analyst", "writer", "trusted")}
AUDIT_LOG = env("TOLLGATE_AUDIT_LOG")


async def with_session(agent, fn):
    headers = {"Authorization": f"Bearer {TOKENS[agent]}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                assert init.server_info.name == "tollgate", init
                return await fn(s)


def session(agent):
    """Decorator-free helper: run `fn(session)` as `agent` and return its result."""
    return lambda fn: asyncio.run(with_session(agent, fn))


def rows(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content["rows"]


def refusal_text(result):
    assert result.is_error, f"not refused: {result}"
    return result.content[0].text


def audit_records():
    time.sleep(0.3)  # outcome records are flushed every 100 ms
    with open(AUDIT_LOG) as f:
        return [json.loads(line) for line in f]


@case
def analyst_lists_tools_queries_masked_customers_and_is_refused_secrets():
    async def go(s):
        tools = (await s.list_tools()).tools
        names = [t.name for t in tools]
        assert names == ["list_upstreams", "list_tables", "describe_table", "query", "explain",
                         "list_keys", "redis", "list_collections", "find", "aggregate"], names
        query = next(t for t in tools if t.name == "query")
        assert query.annotations.read_only_hint is True and query.annotations.destructive_hint is False
        assert "sql" in query.input_schema["properties"]
        masked = await s.call_tool("query", {"sql": "SELECT name, email, phone, ssn FROM customers LIMIT 5"})
        for _name, email, phone, ssn in rows(masked):
            assert EMAIL_MASK.match(email), email
            assert ssn in (None, "REDACTED"), ssn
        text = masked.content[0].text
        assert "<untrusted-data-" in text and "not instructions" in text, text
        refused = await s.call_tool("query", {"sql": "SELECT api_key FROM secrets"})
        assert_policy_message(refusal_text(refused), "secrets")
        assert refused.structured_content["error"]["sqlstate"] == "42501"
        assert refused.structured_content["error"]["origin"] == "tollgate"
        assert "<untrusted-data-" not in refused.content[0].text
        # The server's own error quotes a stored name: it reaches the model only as marked data.
        failed = await s.call_tool("query", {"sql": "SELECT name::int FROM customers ORDER BY id LIMIT 1"})
        assert failed.is_error, failed
        text = failed.content[0].text
        head, _, fenced = text.partition("<untrusted-data-")
        assert fenced and "invalid input syntax" in fenced and "invalid input syntax" not in head, text
        assert failed.structured_content["content_trust"] == "untrusted", failed.structured_content
        assert failed.structured_content["error"]["origin"] == "upstream"
        assert failed.structured_content["error"]["sqlstate"] == "22P02"

    session("analyst")(go)
    recs = [r for r in audit_records() if r.get("protocol") == "mcp" and r["agent"] == "analyst"]
    assert any(r["decision"] == "masked" and "FROM customers LIMIT 5" in (r["statement"] or "") for r in recs)
    assert any(r["decision"] == "blocked" and "FROM secrets" in (r["statement"] or "") and r["rule"] for r in recs)


@case
def tool_lists_differ_by_agent():
    async def hints(s):
        tools = (await s.list_tools()).tools
        return {t.name: (t.annotations.read_only_hint, t.annotations.destructive_hint) for t in tools}

    analyst = session("analyst")(hints)
    writer = session("writer")(hints)
    trusted = session("trusted")(hints)
    assert analyst["query"] == (True, False), analyst
    assert writer["query"] == (False, True), writer
    assert writer["redis"] == (False, True), writer
    assert trusted["query"] == (False, True), trusted
    assert analyst != writer


@case
def every_tool_answers():
    async def go(s):
        ups = (await s.call_tool("list_upstreams", {})).structured_content["upstreams"]
        assert {u["name"]: u["kind"] for u in ups} == {
            "shop": "postgres", "cache": "redis", "mongo": "mongodb"}, ups
        tables = (await s.call_tool("list_tables", {"upstream": "shop"})).structured_content["tables"]
        assert [t["name"] for t in tables] == ["customers", "orders"], tables
        desc = (await s.call_tool("describe_table", {"table": "public.customers"})).structured_content
        assert any(c["name"] == "ssn" and c["masked"] for c in desc["columns"]), desc
        plan = (await s.call_tool("explain", {"sql": "SELECT * FROM secrets"})).structured_content
        assert plan["decision"] == "blocked" and plan["refusal"]["rule"], plan
        keys = (await s.call_tool("list_keys", {"pattern": "cache:*", "limit": 3})).structured_content
        assert len(keys["keys"]) == 3 and all(k.startswith("cache:") for k in keys["keys"]), keys
        value = (await s.call_tool("redis", {"command": "HGET session:2 email"})).structured_content
        assert EMAIL_MASK.match(value["reply"]), value
        assert_policy_message(refusal_text(await s.call_tool("redis", {"command": "GET admin:config"})))

    session("analyst")(go)


@case
def analyst_finds_masked_customers_over_mongodb():
    async def go(s):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        for name in ("list_collections", "find", "aggregate"):
            a = tools[name].annotations
            assert a.read_only_hint is True and a.destructive_hint is False, (name, a)
        colls = (await s.call_tool("list_collections", {"database": "shop"})).structured_content
        assert [c["name"] for c in colls["collections"]] == ["customers", "orders"], colls
        found = await s.call_tool("find", {
            "database": "shop", "collection": "customers",
            "filter": {"_id": {"$lte": 5}}, "sort": {"region": 1, "_id": -1},
        })
        assert not found.is_error, found.content[0].text
        docs = found.structured_content["documents"]
        assert len(docs) == 5 and found.structured_content["decision"] == "masked", found.structured_content
        for d in docs:
            assert EMAIL_MASK.match(d["email"]), d
            assert d["ssn"] == "REDACTED", d
        # The two-key sort arrives in the order written: region first, then _id descending.
        keys = [(d["region"], -d["_id"]) for d in docs]
        assert keys == sorted(keys), keys
        assert "<untrusted-data-" in found.content[0].text
        grouped = await s.call_tool("aggregate", {
            "database": "shop", "collection": "orders",
            "pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}],
        })
        assert not grouped.is_error and grouped.structured_content["documents"][0]["n"] > 0, grouped
        refused = await s.call_tool("find", {"database": "shop", "collection": "secrets"})
        assert_policy_message(refusal_text(refused), "shop.secrets")
        assert refused.structured_content["error"]["code"] == 13, refused.structured_content
        out = await s.call_tool("aggregate", {
            "database": "shop", "collection": "orders", "pipeline": [{"$out": "stolen"}]})
        assert_policy_message(refusal_text(out))

    session("analyst")(go)
    recs = [r for r in audit_records() if r.get("protocol") == "mcp" and r["upstream"] == "mongo"]
    assert any(r["decision"] == "masked" and (r["statement"] or "").startswith("find shop.customers")
               for r in recs), recs[-5:]
    assert any(r["decision"] == "blocked" and (r["statement"] or "").startswith("find shop.secrets")
               and r["rule"] for r in recs)


@case
def writer_inserts_an_order():
    async def go(s):
        r = await s.call_tool("query", {
            "sql": "INSERT INTO orders (customer_id, amount) VALUES ($1, $2) RETURNING id, amount",
            "params": [3, "7.25"],
        })
        (order_id, amount), = rows(r)
        assert isinstance(order_id, int) and amount == "7.25", (order_id, amount)
        again = await s.call_tool("query", {"sql": "SELECT amount FROM orders WHERE id = $1", "params": [order_id]})
        assert rows(again) == [["7.25"]]
        assert_policy_message(refusal_text(await s.call_tool("query", {"sql": "DELETE FROM customers"})))

    session("writer")(go)


@case
def max_result_bytes_cuts_a_large_result():
    async def go(s):
        r = await s.call_tool("query", {"sql": "SELECT repeat('x', 4000) AS pad FROM orders LIMIT 400"})
        c = r.structured_content
        assert c["truncated"] is True and c["truncated_by"] == "max_result_bytes", c["notice"]
        assert 0 < c["row_count"] < 400
        assert "analyst: limits" in c["notice"], c["notice"]

    session("analyst")(go)


@case
def wrong_or_missing_tokens_get_401():
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    writer_token = TOKENS["writer"].split(":", 1)[1]
    for auth in (None, f"Bearer analyst:{writer_token}", "Bearer analyst:tg_wrong", f"Bearer {writer_token}"):
        h = dict(headers)
        if auth:
            h["Authorization"] = auth
        resp = httpx2.post(URL, json=body, headers=h)
        assert resp.status_code == 401, (auth, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == -32001
        assert writer_token not in resp.text

    async def fails():
        try:
            await with_session_token("analyst:tg_not_the_token", lambda s: s.list_tools())
        except Exception as e:  # noqa: BLE001 - the SDK raises its own wrapper around the 401
            return str(e)
        raise AssertionError("the SDK connected with a wrong token")

    assert asyncio.run(fails())


async def with_session_token(token, fn):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await fn(s)


@case
def the_stdio_bridge_serves_the_same_tools():
    token_file = os.path.join(os.environ.get("WORK", "/tmp"), "analyst.token")
    with open(token_file, "w") as f:
        f.write(TOKENS["analyst"] + "\n")
    params = StdioServerParameters(
        command=env("TOLLGATE_BIN"),
        args=["mcp-stdio", "--url", URL, "--token-file", token_file],
    )

    async def go():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names = [t.name for t in (await s.list_tools()).tools]
                assert "query" in names, names
                r = await s.call_tool("query", {"sql": "SELECT email FROM customers LIMIT 1"})
                assert EMAIL_MASK.match(rows(r)[0][0])

    asyncio.run(go())


@case
def mcp_records_verify_in_the_audit_chain():
    recs = audit_records()
    assert any(r.get("protocol") == "mcp" for r in recs)
    prev = None
    for r in recs:
        if prev is not None:
            assert r["prev_hash"] == prev["hash"], r["seq"]
        prev = r


run("mcp")
