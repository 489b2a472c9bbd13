"""pymongo through tollgate's MongoDB listener: SCRAM-SHA-256 with the agent token, CRUD as the
writer, cursors with getMore, aggregation, masking and refusals as the analyst (the refusal is an
OperationFailure with code 13 naming the rule), the analyst's 1000-document cap, transactions as
trusted, wrong token vs unknown agent, TLS against the demo's CA, and "raw PII fetched directly
from the upstream never appears in anything the analyst receives"."""

import bson
import pymongo
from pymongo import CursorType, MongoClient
from pymongo.errors import OperationFailure

from common import EMAIL_MASK, assert_masked_customer, assert_policy_message, case, env, run

ANALYST = env("TOLLGATE_MONGO_ANALYST_URL")
WRITER = env("TOLLGATE_MONGO_WRITER_URL")
TRUSTED = env("TOLLGATE_MONGO_TRUSTED_URL")
UPSTREAM = env("TOLLGATE_UPSTREAM_MONGO_URL")


def client(url, **kw):
    return MongoClient(url, serverSelectionTimeoutMS=10000, **kw)


def refused(fn, what=None, code=13):
    try:
        fn()
    except OperationFailure as e:
        assert e.code == code, (e.code, e.details)
        assert_policy_message(e.details["errmsg"], what)
        return e
    raise AssertionError("not refused")


@case
def analyst_reads_masked_and_is_refused_secrets():
    db = client(ANALYST).shop
    c = db.customers.find_one({"_id": 1})
    assert_masked_customer(c["email"], c["phone"], c["ssn"])
    assert db.orders.find_one()["amount"] > 0
    refused(lambda: db.secrets.find_one(), "shop.secrets")
    refused(lambda: db.orders.insert_one({"_id": -1}), "insert")
    refused(lambda: list(db.customers.find({"email": {"$regex": "^a"}})), "email")
    refused(lambda: list(db.customers.find().sort("ssn", 1)), "ssn")
    refused(lambda: list(db.orders.aggregate([{"$lookup": {"from": "secrets", "pipeline": [], "as": "s"}}])), "secrets")
    refused(lambda: list(db.orders.aggregate([{"$out": "stolen"}])))
    refused(lambda: db.command("createUser", "x", pwd="y", roles=[]), "createUser")
    assert sorted(db.list_collection_names()) == ["customers", "orders"]
    # The session stays usable after refusals.
    assert db.orders.count_documents({"customer_id": 1}) >= 0


@case
def cursors_get_more_and_the_document_cap():
    db = client(ANALYST).shop
    docs = list(db.orders.find({}, batch_size=100))
    assert len(docs) == 1000, len(docs)  # analyst: max_rows = 1000, truncated
    few = list(db.customers.find({"region": "EU"}, batch_size=7).limit(30))
    assert len(few) == 30
    for c in few:
        assert_masked_customer(c["email"], c["phone"], c["ssn"])


@case
def exhaust_cursors_get_one_reply_per_request():
    # tollgate clears exhaustAllowed: the server answers each getMore once, the driver copes.
    orders = client(TRUSTED).shop.orders
    docs = list(orders.find({"_id": {"$lte": 60}}, cursor_type=CursorType.EXHAUST, batch_size=10))
    assert len(docs) == 60, len(docs)


@case
def aggregation_masks_follow_the_data():
    db = client(ANALYST).shop
    rows = list(db.orders.aggregate([
        {"$match": {"customer_id": {"$lte": 5}}},
        {"$lookup": {"from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c"}},
        {"$unwind": "$c"},
        {"$limit": 5},
    ]))
    assert rows, "joined rows"
    for r in rows:
        assert EMAIL_MASK.match(r["c"]["email"]), r
    by_region = list(db.customers.aggregate([{"$group": {"_id": "$region", "n": {"$sum": 1}}}]))
    assert sum(g["n"] for g in by_region) > 0
    refused(lambda: list(db.customers.aggregate([{"$group": {"_id": "$email"}}])), "email")
    refused(lambda: list(db.customers.aggregate([{"$project": {"x": {"$concat": ["$email", "!"]}}}])), "email")


@case
def writer_crud():
    db = client(WRITER).shop
    db.orders.delete_many({"_id": {"$gte": 900000}})
    db.orders.insert_many([{"_id": 900000 + i, "customer_id": 1, "amount": float(i)} for i in range(5)])
    assert db.orders.count_documents({"_id": {"$gte": 900000}}) == 5
    db.orders.update_one({"_id": 900001}, {"$set": {"amount": 42.0}})
    assert db.orders.find_one({"_id": 900001})["amount"] == 42.0
    doc = db.orders.find_one_and_update({"_id": 900002}, {"$inc": {"amount": 1}}, return_document=True)
    assert doc["amount"] == 3.0
    assert db.orders.delete_many({"_id": {"$gte": 900000}}).deleted_count == 5
    refused(lambda: db.customers.find_one(), "shop.customers")


@case
def transactions_as_trusted():
    c = client(TRUSTED)
    coll = c.shop.orders
    coll.delete_many({"_id": {"$in": [910000, 910001]}})
    with c.start_session() as s:
        with s.start_transaction():
            coll.insert_one({"_id": 910000, "amount": 1.0}, session=s)
        with s.start_transaction():
            coll.insert_one({"_id": 910001, "amount": 2.0}, session=s)
            s.abort_transaction()
    assert coll.find_one({"_id": 910000}) is not None
    assert coll.find_one({"_id": 910001}) is None
    coll.delete_one({"_id": 910000})
    # Passthrough still never reaches users, roles or the server's settings.
    refused(lambda: c.admin.command("createUser", "evil", pwd="x", roles=["root"]), "createUser")
    refused(lambda: c.admin.command("setParameter", 1, logLevel=1), "setParameter")


@case
def wrong_token_and_unknown_agent_fail_alike():
    good = ANALYST.split("//", 1)[1].split("@", 1)[1]
    errors = []
    for creds in ["analyst:tg_wrong", "ghost:" + ANALYST.split(":")[2].split("@")[0]]:
        try:
            client(f"mongodb://{creds}@{good}").shop.command("ping")
        except OperationFailure as e:
            errors.append((e.code, str(e.details.get("errmsg"))))
        else:
            raise AssertionError(f"{creds.split(':')[0]} logged in")
    assert errors[0] == errors[1] and errors[0][0] == 18, errors


@case
def tls_listener():
    url = env("TOLLGATE_MONGO_ANALYST_TLS_URL")
    c = client(url)
    assert c.shop.orders.find_one({"_id": 2})["_id"] == 2


@case
def raw_pii_from_the_upstream_never_reaches_the_analyst():
    up = client(UPSTREAM).shop.customers
    raw = list(up.find({}, {"email": 1, "phone": 1, "ssn": 1}).limit(200))
    secrets = [d["email"] for d in raw] + [d["phone"] for d in raw] + [d["ssn"] for d in raw]
    secrets += [s["api_key"] for s in client(UPSTREAM).shop.secrets.find()]
    db = client(ANALYST).shop
    seen = []
    seen += [bson.encode(d) for d in db.customers.find({"_id": {"$lte": 200}})]
    seen += [bson.encode(d) for d in db.customers.aggregate([{"$match": {"_id": {"$lte": 200}}}, {"$project": {"email": 1, "phone": 1, "ssn": 1}}])]
    seen += [bson.encode({"v": db.customers.distinct("email", {"_id": {"$lte": 200}})})]
    seen += [bson.encode(d) for d in db.orders.aggregate([{"$match": {"customer_id": {"$lte": 20}}}, {"$lookup": {"from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c"}}])]
    for fn in [lambda: db.secrets.find_one(), lambda: db.customers.find_one({"email": raw[0]["email"]})]:
        try:
            fn()
        except OperationFailure as e:
            seen.append(str(e.details).encode())
    blob = b"".join(seen)
    leaked = [s for s in secrets if s and s.encode() in blob]
    assert not leaked, f"raw values reached the analyst: {leaked[:3]}"
    assert len(blob) > 10000, len(blob)


run(f"pymongo {pymongo.version}")
