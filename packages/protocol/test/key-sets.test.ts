import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import {
  OcsError,
  createKeySetCache,
  createTokenVerifier,
  publicKeySet,
  type ErrorCode,
  type KeySetCacheOptions,
} from '@ocs/protocol';

const ISS = 'https://idp.example';
const NODE = 'node-1';
const T0 = Date.parse('2030-01-01T00:00:00Z');

interface Signer {
  privateKey: CryptoKey;
  jwk: JWK;
  privateJwk: JWK;
  kid: string;
}

async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
  return {
    privateKey,
    kid,
    jwk: { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' },
    privateJwk: { ...(await exportJWK(privateKey)), kid },
  };
}

const a = await signer('a');
const b = await signer('b');

/** A JWKS server stand-in: what it serves now, how often it was asked, and whether it is down. */
function issuer(initial: unknown) {
  const s = {
    serving: initial as unknown,
    down: false,
    fetches: 0,
    errors: 0,
    changes: 0,
    clock: T0,
  };
  return s;
}

function cache(s: ReturnType<typeof issuer>, over: Partial<KeySetCacheOptions> = {}) {
  const c = createKeySetCache({
    load: async () => {
      s.fetches++;
      if (s.down) throw new Error('ECONNREFUSED');
      return { jwks: s.serving };
    },
    refreshMs: 60_000,
    cooldownMs: 10_000,
    maxStaleMs: 3_600_000,
    now: () => s.clock,
    onError: () => void s.errors++,
    onChange: () => void s.changes++,
    ...over,
  });
  const verify = createTokenVerifier({ issuers: [{ issuer: ISS, keys: c.getKey }], audiences: [NODE] });
  const token = (k: Signer) =>
    new SignJWT({ org: 'acme', roles: ['spaces'] })
      .setProtectedHeader({ alg: 'EdDSA', kid: k.kid, typ: 'at+jwt' })
      .setIssuer(ISS)
      .setAudience(NODE)
      .setSubject('alice')
      .setIssuedAt(Math.floor(s.clock / 1000) - 1)
      .setExpirationTime(Math.floor(s.clock / 1000) + 300)
      .sign(k.privateKey);
  const check = async (k: Signer) => verify(await token(k), { now: new Date(s.clock) });
  const refused = async (k: Signer, code: ErrorCode) =>
    assert.rejects(check(k), (err: unknown) => {
      assert.ok(err instanceof OcsError, String(err));
      assert.equal(err.code, code, err.message);
      return true;
    });
  return { c, check, refused };
}

test('rotation by kid: a new key is fetched on first sight, a removed key is refused once the set is refreshed', async () => {
  const s = issuer({ keys: [a.jwk] });
  const { c, check, refused } = cache(s);
  assert.equal(c.current(), undefined);
  await check(a);
  assert.equal(s.fetches, 1);
  await check(a);
  assert.equal(s.fetches, 1, 'a fresh set is not fetched again');

  // The issuer publishes b next to a, and signs with b.
  s.serving = { keys: [a.jwk, b.jwk] };
  s.clock += 11_000;
  await check(b);
  assert.equal(s.fetches, 2);
  // Then drops a. Until the set is due for refresh, a still verifies; after, it is unknown.
  s.serving = { keys: [b.jwk] };
  await check(a);
  s.clock += 61_000;
  await refused(a, 'token_key_unknown');
  await check(b);
  assert.deepEqual(
    c.current()?.jwks.keys.map((k) => k.kid),
    ['b'],
  );
  assert.equal(s.changes, 3);
});

test('unknown kids cause at most one fetch per cooldown, shared by concurrent callers', async () => {
  const s = issuer({ keys: [a.jwk] });
  const { check, refused } = cache(s);
  await check(a);
  s.clock += 20_000;
  const stranger = await signer('nobody');
  await Promise.all(Array.from({ length: 50 }, () => refused(stranger, 'token_key_unknown')));
  assert.equal(s.fetches, 2, 'fifty unknown kids at once: one fetch');
  for (let i = 0; i < 50; i++) await refused(stranger, 'token_key_unknown');
  assert.equal(s.fetches, 2, 'within the cooldown: no fetch');
  s.clock += 10_000;
  await refused(stranger, 'token_key_unknown');
  assert.equal(s.fetches, 3);
});

test('an issuer that is down or answers garbage never breaks verification with a good set, and never throws raw', async () => {
  const s = issuer({ keys: [a.jwk] });
  const { c, check, refused } = cache(s);
  await check(a);
  const garbage: unknown[] = [
    'not json at all',
    null,
    42,
    [],
    {},
    { keys: 'x' },
    { keys: [1, 2] },
    { keys: Array.from({ length: 65 }, () => a.jwk) },
  ];
  for (const g of garbage) {
    s.serving = g;
    s.clock += 61_000;
    await check(a);
  }
  assert.equal(s.errors, garbage.length, 'each malformed answer was reported');
  assert.equal(s.fetches, garbage.length + 1);
  assert.deepEqual(c.current()?.jwks, { keys: [a.jwk] }, 'garbage never replaced the good set');
  // A well-formed set the issuer emptied is honoured: it revoked its keys.
  s.serving = { keys: [] };
  s.clock += 61_000;
  await refused(a, 'token_key_unknown');
});

test('while the issuer is down the last good set serves, up to maxStale; then unavailable until it answers', async () => {
  const s = issuer({ keys: [a.jwk] });
  const { check, refused } = cache(s);
  await check(a);
  s.down = true;
  s.clock += 61_000;
  await check(a);
  assert.equal(s.fetches, 2);
  // An unknown kid while the issuer is down: we cannot tell, so retry later.
  s.clock += 11_000;
  await refused(b, 'unavailable');
  s.clock = T0 + 3_600_001;
  await refused(a, 'unavailable');
  s.down = false;
  s.clock += 11_000;
  await check(a);
});

test('without any set yet, a fetch failure is unavailable (not a raw error, not a 500)', async () => {
  const s = issuer({ keys: [a.jwk] });
  s.down = true;
  const { refused, check } = cache(s);
  await refused(a, 'unavailable');
  await refused(a, 'unavailable');
  assert.equal(s.fetches, 1, 'the cooldown also bounds fetches while there is no set');
  s.down = false;
  s.clock += 10_000;
  await check(a);
});

test('an initial set serves without a fetch; an older copy never replaces a newer one', async () => {
  const s = issuer({ keys: [b.jwk] });
  const { c, check } = cache(s, { initial: { jwks: { keys: [a.jwk] }, fetchedAt: T0 } });
  await check(a);
  assert.equal(s.fetches, 0);
  assert.equal(s.changes, 0, 'the initial set is no change');
  assert.equal(s.errors, 0);
  const older = createKeySetCache({
    load: async () => ({ jwks: { keys: [b.jwk] }, fetchedAt: T0 - 1 }),
    initial: { jwks: { keys: [a.jwk] }, fetchedAt: T0 },
    refreshMs: 0,
    cooldownMs: 0,
    maxStaleMs: 3_600_000,
    now: () => T0,
  });
  assert.equal(await older.refresh(), true);
  assert.deepEqual(
    older.current()?.jwks.keys.map((k) => k.kid),
    ['a'],
  );
  assert.equal(c.current()?.fetchedAt, T0);
});

test('publicKeySet keeps public signing keys only', async () => {
  const oct = { kty: 'oct', k: 'c2VjcmV0', kid: 'h' };
  const enc = { ...b.jwk, kid: 'e', use: 'enc' };
  const set = publicKeySet({ keys: [a.privateJwk, oct, enc, b.jwk, { kty: 'XYZ' }, { ...b.jwk, kid: 7 }] });
  assert.deepEqual(set, { keys: [b.jwk] });
  // A private key published by mistake is dropped, so a token by it finds no key.
  const s = issuer({ keys: [a.privateJwk] });
  const { refused } = cache(s);
  await refused(a, 'token_key_unknown');
  for (const bad of [undefined, 'x', { keys: {} }]) assert.throws(() => publicKeySet(bad), TypeError);
});
