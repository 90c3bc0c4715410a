import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcsError, cacheTokens, type Principal } from '@ocs/protocol';

const principal = (exp: number): Principal => ({
  subject: 's',
  issuer: 'i',
  org: 'o',
  roles: new Set(['monitor']),
  issuedAt: new Date(exp - 60_000),
  expiresAt: new Date(exp),
});

test('a verified token is verified once, then served from cache until it expires', async () => {
  let calls = 0;
  const exp = 1_000_000;
  const cached = cacheTokens(async () => {
    calls++;
    return principal(exp);
  });
  await cached('t1', { now: new Date(exp - 10_000) });
  await cached('t1', { now: new Date(exp - 5_000) });
  assert.equal(calls, 1);
  await assert.rejects(cached('t1', { now: new Date(exp + 1) }), (e: OcsError) => e.code === 'token_expired');
});

test('refusals are never cached', async () => {
  let calls = 0;
  const cached = cacheTokens(async () => {
    calls++;
    throw new OcsError('token_signature_invalid', 'bad');
  });
  await assert.rejects(cached('forged'));
  await assert.rejects(cached('forged'));
  assert.equal(calls, 2);
});

test('the cache is bounded', async () => {
  let calls = 0;
  const cached = cacheTokens(async () => (calls++, principal(Date.now() + 60_000)), { maxEntries: 2 });
  for (const t of ['a', 'b', 'c', 'a']) await cached(t);
  assert.equal(calls, 4);
});

test('clear() forgets every verdict: after a key change each token is verified again', async () => {
  let calls = 0;
  const exp = Date.now() + 60_000;
  const cached = cacheTokens(async () => (calls++, principal(exp)));
  await cached('t1');
  await cached('t1');
  assert.equal(calls, 1);
  cached.clear();
  await cached('t1');
  assert.equal(calls, 2);
});
