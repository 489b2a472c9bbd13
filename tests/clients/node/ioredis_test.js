// ioredis through tollgate's Redis listener: AUTH with the agent token (username + password
// from the URL), reads with session email masked, refusals as ReplyError carrying -NOPERM and
// the rule, pipelines and MULTI/EXEC (writer), auto-pipelining, pub/sub, RESP3 via HELLO.
'use strict';
const Redis = require('ioredis');
const { assert, env, test, run, assertPolicyMessage, EMAIL_MASK, versionOf } = require('./harness');

const ANALYST = env('TOLLGATE_REDIS_ANALYST_URL');
const WRITER = env('TOLLGATE_REDIS_WRITER_URL');
const TRUSTED = env('TOLLGATE_REDIS_TRUSTED_URL');

function connect(url, opts = {}) {
  // The ready check sends INFO, which tollgate refuses unless a policy names it (ioredis then
  // logs "Skipping the ready check" and goes on); see docs/clients.md. Off except where tested.
  return new Redis(url, { maxRetriesPerRequest: 1, enableReadyCheck: false, ...opts });
}

async function noperm(promise, what) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'command was not refused');
  assert.equal(err.name, 'ReplyError', `not a ReplyError: ${err}`);
  assert.ok(err.message.startsWith('NOPERM'), err.message);
  assertPolicyMessage(err.message, what);
}

async function withClient(url, fn, opts) {
  const r = connect(url, opts);
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

test('reads_masking_refusals', () =>
  withClient(ANALYST, async (r) => {
    assert.equal(await r.ping(), 'PONG');
    assert.equal(await r.get('cache:1'), 'cached value 1');
    const h = await r.hgetall('session:1');
    assert.equal(h.user, 'user1');
    assert.match(h.email, EMAIL_MASK);
    assert.match(await r.hget('session:3', 'email'), EMAIL_MASK);
    await noperm(r.get('admin:config'), 'admin:config');
    await noperm(r.flushall(), 'dangerous');
    await noperm(r.set('cache:1', 'x'));
    assert.equal(await r.get('cache:2'), 'cached value 2');
  }));

test('pipeline_and_multi_writer', () =>
  withClient(WRITER, async (w) => {
    const p = w.pipeline();
    for (let i = 0; i < 100; i++) p.set(`cache:io:${i}`, i);
    p.get('cache:io:42');
    p.get('admin:config'); // refused in its slot only
    p.incr('cache:io:1');
    const out = await p.exec();
    assert.equal(out.length, 103);
    assert.deepEqual(out[100], [null, '42']);
    assert.ok(out[101][0] && out[101][0].message.startsWith('NOPERM'), String(out[101][0]));
    assert.deepEqual(out[102], [null, 2]);
    const tx = await w.multi().set('cache:io:tx', 'a').append('cache:io:tx', 'b').get('cache:io:tx').exec();
    assert.deepEqual(tx, [[null, 'OK'], [null, 2], [null, 'ab']]);
    let err;
    try {
      await w.multi().set('cache:io:tx', 'c').set('admin:x', '1').exec();
    } catch (e) {
      err = e;
    }
    assert.ok(err && /EXECABORT/.test(err.message), `MULTI with a refused command: ${err}`);
    assert.equal(await w.get('cache:io:tx'), 'ab');
    const keys = Array.from({ length: 100 }, (_, i) => `cache:io:${i}`);
    assert.equal(await w.del(...keys, 'cache:io:tx'), 101);
  }));

test('default_ready_check_info_refused', async () => {
  const logged = [];
  const orig = console.warn;
  console.warn = (...a) => logged.push(a.join(' '));
  try {
    await withClient(ANALYST, async (r) => {
      assert.equal(await r.get('cache:7'), 'cached value 7');
    }, { enableReadyCheck: true });
  } finally {
    console.warn = orig;
  }
  assert.ok(logged.some((l) => l.includes('INFO') && l.includes('NOPERM')), JSON.stringify(logged));
});

test('auto_pipelining_analyst', () =>
  withClient(
    ANALYST,
    async (r) => {
      const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => r.get(`cache:${i + 1}`)));
      assert.equal(replies[0], 'cached value 1');
      assert.equal(replies[199], 'cached value 200');
    },
    { enableAutoPipelining: true },
  ));

test('pubsub', async () => {
  const sub = connect(ANALYST);
  const pub = connect(TRUSTED);
  try {
    const got = [];
    sub.on('message', (ch, msg) => got.push(['message', ch, msg]));
    sub.on('pmessage', (pat, ch, msg) => got.push(['pmessage', ch, msg]));
    assert.equal(await sub.subscribe('news.io'), 1);
    assert.equal(await sub.psubscribe('news.*'), 2);
    assert.equal(await pub.publish('news.io', 'hello'), 2);
    const deadline = Date.now() + 5000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(got.sort(), [['message', 'news.io', 'hello'], ['pmessage', 'news.io', 'hello']]);
    await noperm(sub.subscribe('admin-alerts'), 'admin-alerts');
  } finally {
    sub.disconnect();
    pub.disconnect();
  }
});

test('resp3_hello', () =>
  withClient(ANALYST, async (r) => {
    // ioredis speaks RESP2; HELLO 3 switches the connection: replies are then RESP3 maps that
    // ioredis still parses for simple commands.
    const hello = await r.call('HELLO', '3');
    assert.ok(Array.isArray(hello) || typeof hello === 'object', String(hello));
    assert.equal(await r.get('cache:5'), 'cached value 5');
    await noperm(r.get('admin:users'), 'admin:users');
  }));

run(`ioredis ${versionOf('ioredis')}`);
