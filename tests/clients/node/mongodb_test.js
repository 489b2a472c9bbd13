// The Node.js `mongodb` driver through tollgate's MongoDB listener: SCRAM-SHA-256 with the
// agent token, masked reads and refusals (MongoServerError code 13 naming the rule), cursors with
// getMore, aggregation, the writer's CRUD and bulk writes, transactions as trusted, wrong tokens,
// and TLS against the demo's CA.
'use strict';
const { MongoClient, MongoServerError } = require('mongodb');
const { assert, env, test, run, rejects, assertMaskedCustomer, assertPolicyMessage, versionOf } = require('./harness');

const ANALYST = env('TOLLGATE_MONGO_ANALYST_URL');
const WRITER = env('TOLLGATE_MONGO_WRITER_URL');
const TRUSTED = env('TOLLGATE_MONGO_TRUSTED_URL');

async function withClient(url, fn) {
  const c = new MongoClient(url, { serverSelectionTimeoutMS: 10000 });
  try {
    await c.connect();
    return await fn(c);
  } finally {
    await c.close();
  }
}

function refusal(what) {
  return (e) => {
    assert.ok(e instanceof MongoServerError, `not a server error: ${e}`);
    assert.equal(e.code, 13, e.message);
    assertPolicyMessage(e.message, what);
  };
}

test('analyst_reads_masked_refusals_keep_the_session', () =>
  withClient(ANALYST, async (c) => {
    const db = c.db('shop');
    const cust = await db.collection('customers').findOne({ _id: 3 });
    assertMaskedCustomer(cust.email, cust.phone, cust.ssn);
    await rejects(db.collection('secrets').findOne(), refusal('shop.secrets'));
    await rejects(db.collection('customers').find({ ssn: { $gt: '' } }).toArray(), refusal('ssn'));
    await rejects(db.collection('orders').insertOne({ _id: -5 }), refusal('insert'));
    await rejects(
      db.collection('orders').aggregate([{ $unionWith: { coll: 'secrets' } }]).toArray(),
      refusal('secrets'),
    );
    assert.ok((await db.collection('orders').findOne({ _id: 4 }))._id);
  }));

test('cursors_get_more_and_the_cap', () =>
  withClient(ANALYST, async (c) => {
    const orders = await c.db('shop').collection('orders').find({}, { batchSize: 50 }).toArray();
    assert.equal(orders.length, 1000);
    const cur = c.db('shop').collection('customers').find({}, { batchSize: 10 }).limit(35);
    let n = 0;
    for await (const d of cur) {
      assertMaskedCustomer(d.email, d.phone, d.ssn);
      n += 1;
    }
    assert.equal(n, 35);
  }));

test('aggregation_with_lookup_masks_joined_documents', () =>
  withClient(ANALYST, async (c) => {
    const rows = await c.db('shop').collection('orders').aggregate([
      { $match: { customer_id: { $lte: 3 } } },
      { $lookup: { from: 'customers', localField: 'customer_id', foreignField: '_id', as: 'c' } },
      { $unwind: '$c' },
      { $limit: 3 },
    ]).toArray();
    assert.ok(rows.length > 0);
    for (const r of rows) assertMaskedCustomer(r.c.email, r.c.phone, r.c.ssn);
  }));

test('writer_crud_and_bulk', () =>
  withClient(WRITER, async (c) => {
    const o = c.db('shop').collection('orders');
    await o.deleteMany({ _id: { $gte: 920000, $lt: 920100 } });
    await o.insertMany([...Array(10).keys()].map((i) => ({ _id: 920000 + i, customer_id: 2, amount: i })));
    const bulk = await o.bulkWrite([
      { updateOne: { filter: { _id: 920001 }, update: { $set: { amount: 100 } } } },
      { deleteOne: { filter: { _id: 920002 } } },
    ], { ordered: true }).catch((e) => e);
    // bulkWrite on MongoDB 8 may use the cross-namespace `bulkWrite` command, which tollgate
    // refuses; drivers speaking wire version <= 24 use update/delete, which is what tollgate
    // advertises at most.
    assert.ok(!(bulk instanceof Error), `${bulk}`);
    assert.equal((await o.findOne({ _id: 920001 })).amount, 100);
    assert.equal(await o.countDocuments({ _id: { $gte: 920000, $lt: 920100 } }), 9);
    await o.deleteMany({ _id: { $gte: 920000, $lt: 920100 } });
  }));

test('transactions_as_trusted', () =>
  withClient(TRUSTED, async (c) => {
    const o = c.db('shop').collection('orders');
    await o.deleteMany({ _id: { $in: [930000, 930001] } });
    const s = c.startSession();
    try {
      await s.withTransaction(async () => {
        await o.insertOne({ _id: 930000 }, { session: s });
      });
      s.startTransaction();
      await o.insertOne({ _id: 930001 }, { session: s });
      await s.abortTransaction();
    } finally {
      await s.endSession();
    }
    assert.ok(await o.findOne({ _id: 930000 }));
    assert.equal(await o.findOne({ _id: 930001 }), null);
    await o.deleteOne({ _id: 930000 });
  }));

test('wrong_token_fails', async () => {
  const bad = ANALYST.replace(/analyst:[^@]+@/, 'analyst:tg_wrong@');
  const c = new MongoClient(bad, { serverSelectionTimeoutMS: 5000 });
  await rejects(c.connect(), (e) => assert.match(`${e.message}`, /Authentication failed/));
  await c.close();
});

test('tls_listener', () =>
  withClient(env('TOLLGATE_MONGO_ANALYST_TLS_URL'), async (c) => {
    assert.ok(await c.db('shop').collection('orders').findOne({ _id: 6 }));
  }));

run(`mongodb (Node) ${versionOf('mongodb')}`);
