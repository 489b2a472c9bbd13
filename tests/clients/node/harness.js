// Tiny harness shared by the Node client programs in tests/clients (same output as
// ../python/common.py): every case runs, `ok`/`FAIL` per case, exit 1 if any failed.
'use strict';
const assert = require('node:assert/strict');

const cases = [];
const EMAIL_MASK = /^\*\*\*@example\.(org|net|com)$/;
const PHONE_MASK = /^\*\*\*\d{4}$/;

function env(key) {
  const v = process.env[key];
  if (!v) throw new Error(`${key} is not set (run through tests/clients/run.sh)`);
  return v;
}

function test(name, fn) {
  cases.push({ name, fn });
}

function assertMaskedCustomer(email, phone, ssn) {
  assert.match(email, EMAIL_MASK, `email not masked: ${email}`);
  if (phone !== null && phone !== undefined) assert.match(phone, PHONE_MASK, `phone not masked: ${phone}`);
  if (ssn !== null && ssn !== undefined) assert.equal(ssn, 'REDACTED');
}

function assertPolicyMessage(text, what) {
  assert.ok(text.includes('tollgate:'), `not a tollgate refusal: ${text}`);
  assert.match(text, /\((tollgate )?rule: [^)]+\)/, `refusal does not name its rule: ${text}`);
  if (what) assert.ok(text.includes(what), `refusal does not mention ${what}: ${text}`);
}

async function rejects(promise, check) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'expected a refusal, the call succeeded');
  check(err);
  return err;
}

async function run(title) {
  let failed = 0;
  for (const { name, fn } of cases) {
    const start = Date.now();
    try {
      await fn();
      console.log(`ok   ${title}: ${name} (${((Date.now() - start) / 1000).toFixed(2)}s)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${title}: ${name}`);
      console.log(e && e.stack ? e.stack : e);
    }
  }
  console.log(`${title}: ${cases.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

module.exports = { assert, env, test, run, rejects, assertMaskedCustomer, assertPolicyMessage, EMAIL_MASK };

// The installed version of a package (read from node_modules, since some packages do not
// export their package.json).
function versionOf(name) {
  const fs = require('node:fs');
  const path = require('node:path');
  return JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;
}
module.exports.versionOf = versionOf;
