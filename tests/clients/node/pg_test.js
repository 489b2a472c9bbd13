// node-postgres (pg) and pg-cursor through tollgate: simple and extended queries, named
// prepared statements, binary results, pg-cursor (portal Execute with a row count,
// PortalSuspended), pg.Pool, transactions, masking, refusals as pg's DatabaseError with
// code 42501 and the policy message; the 1000-row limit across a cursor's batches.
'use strict';
const pg = require('pg');
const Cursor = require('pg-cursor');
const { assert, env, test, run, rejects, assertMaskedCustomer, assertPolicyMessage, versionOf } = require('./harness');

const ANALYST = env('TOLLGATE_PG_ANALYST_URL');
const WRITER = env('TOLLGATE_PG_WRITER_URL');
const MARK = '6543.21';

async function withClient(url, fn, extra = {}) {
  const c = new pg.Client({ connectionString: url, ...extra });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function refused(what) {
  return (e) => {
    assert.ok(e instanceof pg.DatabaseError, `not a DatabaseError: ${e}`);
    assert.equal(e.code, '42501');
    assertPolicyMessage(e.message, what);
    // What the agent may use instead on this upstream (never "see tollgate explain").
    assert.ok(e.hint && e.hint.startsWith('allowed on "shop"'), `hint: ${e.hint}`);
  };
}

test('simple_and_extended_masked', () =>
  withClient(ANALYST, async (c) => {
    const simple = await c.query('SELECT id, email, phone, ssn FROM customers ORDER BY id LIMIT 10');
    assert.equal(simple.rowCount, 10);
    for (const r of simple.rows) assertMaskedCustomer(r.email, r.phone, r.ssn);
    const ext = await c.query('SELECT id, email FROM customers WHERE id = $1', [7]);
    assert.equal(ext.rows[0].id, '7'); // bigint comes back as a string in pg
    assertMaskedCustomer(ext.rows[0].email);
    const arr = await c.query({ text: 'SELECT id, amount FROM orders WHERE id = ANY($1::bigint[]) ORDER BY id', values: [[1, 2, 3]], rowMode: 'array' });
    assert.deepEqual(arr.rows.map((r) => r[0]), ['1', '2', '3']);
  }));

test('named_prepared_statements', () =>
  withClient(ANALYST, async (c) => {
    for (let i = 1; i <= 6; i++) {
      const r = await c.query({ name: 'cust_by_id', text: 'SELECT id, email, ssn FROM customers WHERE id = $1', values: [i] });
      assert.equal(r.rows[0].id, String(i));
      assertMaskedCustomer(r.rows[0].email, null, r.rows[0].ssn);
    }
    await rejects(c.query({ name: 'sec', text: 'SELECT api_key FROM secrets WHERE id = $1', values: [1] }), refused('secrets'));
    const again = await c.query({ name: 'cust_by_id', text: 'SELECT id, email, ssn FROM customers WHERE id = $1', values: [9] });
    assert.equal(again.rows[0].id, '9');
  }));

test('binary_results', () =>
  withClient(ANALYST, async (c) => {
    const r = await c.query({ text: 'SELECT id, email, region FROM customers WHERE id = $1', values: [3], binary: true });
    const row = r.rows[0];
    // pg parses few types in binary mode: int8 comes back as a string, text as text
    assert.equal(String(row.id), '3');
    assertMaskedCustomer(row.email);
    assert.ok(row.region.length > 0);
  }, { binary: true }));

test('pg_cursor_batches_and_row_limit', () =>
  withClient(ANALYST, async (c) => {
    const notices = [];
    c.on('notice', (n) => notices.push(n.message));
    const cursor = c.query(new Cursor('SELECT id, email FROM customers ORDER BY id'));
    let total = 0;
    for (;;) {
      const rows = await cursor.read(300);
      for (const r of rows) assertMaskedCustomer(r.email);
      total += rows.length;
      if (rows.length === 0) break;
    }
    await cursor.close();
    // max_rows = 1000 for the analyst: the cursor's batches count towards one statement
    assert.equal(total, 1000, `rows through pg-cursor: ${total}`);
    assert.ok(notices.some((n) => n.includes('truncated to 1000 rows')), JSON.stringify(notices));
    const small = c.query(new Cursor('SELECT id FROM orders WHERE id <= $1 ORDER BY id', [250]));
    const first = await small.read(100);
    const second = await small.read(100);
    const third = await small.read(100);
    await small.close();
    assert.deepEqual([first.length, second.length, third.length], [100, 100, 50]);
    assert.equal(third[49].id, '250');
    const bad = c.query(new Cursor('SELECT * FROM secrets'));
    await rejects(bad.read(10), refused('secrets'));
    const ok = await c.query('SELECT 1 AS one');
    assert.equal(ok.rows[0].one, 1);
  }));

test('pool_and_transactions_writer', async () => {
  const pool = new pg.Pool({ connectionString: WRITER, max: 3 });
  try {
    const results = await Promise.all([1, 2, 3, 4, 5].map((i) => pool.query('SELECT id FROM orders WHERE id = $1', [i])));
    assert.deepEqual(results.map((r) => r.rows[0].id), ['1', '2', '3', '4', '5']);
    const c = await pool.connect();
    try {
      const before = (await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n;
      await c.query('BEGIN');
      const ins = await c.query('INSERT INTO orders (customer_id, amount) VALUES ($1, $2), ($1, $2) RETURNING id', [1, MARK]);
      assert.equal(ins.rowCount, 2);
      await c.query('SAVEPOINT s1');
      await rejects(c.query("UPDATE customers SET name = 'x' WHERE id = 1"), refused('customers'));
      await c.query('ROLLBACK TO SAVEPOINT s1');
      const upd = await c.query('UPDATE orders SET amount = amount + 1 WHERE id = ANY($1::bigint[])', [ins.rows.map((r) => r.id)]);
      assert.equal(upd.rowCount, 2);
      await c.query('COMMIT');
      assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, before + 2);
      const del = await c.query('DELETE FROM orders WHERE id = ANY($1::bigint[])', [ins.rows.map((r) => r.id)]);
      assert.equal(del.rowCount, 2);
    } finally {
      c.release();
    }
  } finally {
    await pool.end();
  }
});

test('refusals_keep_session_usable', () =>
  withClient(ANALYST, async (c) => {
    await rejects(c.query('SELECT * FROM secrets'), refused('secrets'));
    await rejects(c.query('INSERT INTO orders (customer_id, amount) VALUES (1, 1)'), refused('orders'));
    await rejects(c.query('DELETE FROM orders WHERE id = $1', [1]), refused('orders'));
    const r = await c.query('SELECT count(*)::int AS n FROM customers');
    assert.equal(r.rows[0].n, 5000);
  }));

run(`node-postgres ${versionOf('pg')} + pg-cursor ${versionOf('pg-cursor')}`);
