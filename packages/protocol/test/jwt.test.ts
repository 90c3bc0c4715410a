import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  SignJWT,
  base64url,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import {
  OcsError,
  bearerToken,
  createTokenVerifier,
  mintToken,
  requireRole,
  type ErrorCode,
  type Principal,
  type TokenPolicy,
} from '@ocs/protocol';

// A frozen clock: every token and every verification uses it.
const NOW = new Date('2030-01-01T00:00:00Z');
const T = NOW.getTime() / 1000;
const ISS_A = 'https://idp.example/a';
const ISS_B = 'https://idp.example/b';
const NODE = 'node-1';
const CLUSTER = 'cluster-x';

interface Signer {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
  alg: string;
}

async function signer(alg: 'EdDSA' | 'ES256' | 'RS256', kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, use: 'sig' };
  return { privateKey, publicKey, publicJwk, kid, alg };
}

// Issuer A rotates: two EdDSA keys live at once. Issuer B signs with ES256.
const a1 = await signer('EdDSA', 'a1');
const a2 = await signer('EdDSA', 'a2');
const b1 = await signer('ES256', 'b1');
const intruder = await signer('EdDSA', 'a1'); // same kid as a1, different key

const policy: TokenPolicy = {
  issuers: [
    { issuer: ISS_A, keys: { keys: [a1.publicJwk, a2.publicJwk] } },
    { issuer: ISS_B, keys: { keys: [b1.publicJwk] }, algorithms: ['ES256'] },
  ],
  audiences: [NODE, CLUSTER],
};
const verify = createTokenVerifier(policy);
const at = { now: NOW };

function claims(over: Record<string, unknown> = {}): JWTPayload {
  const base: Record<string, unknown> = {
    iss: ISS_A,
    sub: 'alice@example',
    aud: NODE,
    org: 'acme',
    roles: ['spaces', 'monitor'],
    iat: T - 10,
    exp: T + 290,
    jti: 'tok-1',
  };
  // `undefined` in an override removes the claim.
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base;
}

/** Signs exactly the given claims: no builder helpers, so a test controls every field. */
async function sign(payload: JWTPayload, s: Signer = a1, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: s.alg, kid: s.kid, typ: 'at+jwt', ...header })
    .sign(s.privateKey);
}

function b64json(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

async function refusal(token: string | undefined, code: ErrorCode, v = verify): Promise<void> {
  await assert.rejects(v(token, at), (err: unknown) => {
    assert.ok(err instanceof OcsError, `expected OcsError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (token) {
      const said = err.message + JSON.stringify(err.details ?? {});
      assert.ok(!said.includes(token), 'the refusal must not echo the token');
      const sig = token.split('.')[2];
      if (sig && sig.length >= 16) assert.ok(!said.includes(sig), 'the refusal must not echo the signature');
    }
    return true;
  });
}

test('a valid EdDSA token gives the principal', async () => {
  const p = await verify(await sign(claims()), at);
  assert.equal(p.subject, 'alice@example');
  assert.equal(p.issuer, ISS_A);
  assert.equal(p.org, 'acme');
  assert.deepEqual([...p.roles].sort(), ['monitor', 'spaces']);
  assert.equal(p.issuedAt.getTime(), (T - 10) * 1000);
  assert.equal(p.expiresAt.getTime(), (T + 290) * 1000);
  assert.equal(p.tokenId, 'tok-1');
});

test('a valid ES256 token from a second issuer, with the cluster as audience', async () => {
  const p = await verify(
    await sign(claims({ iss: ISS_B, aud: ['other', CLUSTER], org: 'globex', roles: ['farmer'], jti: undefined }), b1),
    at,
  );
  assert.equal(p.issuer, ISS_B);
  assert.equal(p.org, 'globex');
  assert.deepEqual([...p.roles], ['farmer']);
  assert.equal(p.tokenId, undefined);
});

test('the Ed25519 algorithm name is accepted like EdDSA', async () => {
  const p = await verify(await sign(claims(), a1, { alg: 'Ed25519' }), at);
  assert.equal(p.org, 'acme');
});

test('an RS256 issuer works, and its keys may come from a resolver function', async () => {
  const r = await signer('RS256', 'r1');
  const v = createTokenVerifier({
    issuers: [{ issuer: 'rsa-idp', keys: createLocalJWKSet({ keys: [r.publicJwk] }) }],
    audiences: [NODE],
  });
  const p = await v(await sign(claims({ iss: 'rsa-idp' }), r), at);
  assert.equal(p.issuer, 'rsa-idp');
});

test('key rotation: each kid of the set verifies; a kid not in the set is token_key_unknown', async () => {
  assert.equal((await verify(await sign(claims(), a1), at)).subject, 'alice@example');
  assert.equal((await verify(await sign(claims(), a2), at)).subject, 'alice@example');
  const a3 = await signer('EdDSA', 'a3');
  await refusal(await sign(claims(), a3), 'token_key_unknown');
  // Without a kid, two candidate keys: the token cannot say which one, so no key.
  await refusal(await sign(claims(), a1, { kid: undefined }), 'token_key_unknown');
});

test('mintToken produces a token the verifier accepts', async () => {
  const token = await mintToken({
    privateKey: a2.privateKey,
    kid: 'a2',
    alg: 'EdDSA',
    issuer: ISS_A,
    audience: NODE,
    subject: 'farmer@localhost',
    org: 'dev',
    roles: ['farmer', 'spaces'],
    now: NOW,
    tokenId: 'j-1',
  });
  assert.equal(decodeProtectedHeader(token).typ, 'at+jwt');
  const p = await verify(token, at);
  assert.equal(p.subject, 'farmer@localhost');
  assert.deepEqual([...p.roles], ['farmer', 'spaces']);
  assert.equal(p.expiresAt.getTime() - p.issuedAt.getTime(), 300_000);
  assert.equal(p.tokenId, 'j-1');
  await assert.rejects(
    mintToken({
      privateKey: a2.privateKey,
      kid: 'a2',
      alg: 'EdDSA',
      issuer: ISS_A,
      audience: NODE,
      subject: 's',
      org: 'o',
      roles: ['farmer'],
      lifetimeSeconds: Number('x'),
    }),
    TypeError,
  );
});

const publicJwkJson = JSON.stringify(a1.publicJwk);
const publicPem = await exportSPKI(a1.publicKey);
const valid = await sign(claims());
const [vh, vp, vs] = valid.split('.') as [string, string, string];

const attacks: [name: string, token: () => Promise<string | undefined> | string | undefined, code: ErrorCode][] = [
  // Algorithm attacks: refused before any key lookup.
  ['alg none, hand-built', () => `${b64json({ alg: 'none', typ: 'JWT' })}.${vp}.`, 'token_algorithm_refused'],
  [
    'alg none with a signature part',
    () => `${b64json({ alg: 'none', kid: 'a1' })}.${vp}.${vs}`,
    'token_algorithm_refused',
  ],
  ['alg NONE in capitals', () => `${b64json({ alg: 'NONE' })}.${vp}.`, 'token_algorithm_refused'],
  ['no alg at all', () => `${b64json({ typ: 'JWT', kid: 'a1' })}.${vp}.${vs}`, 'token_algorithm_refused'],
  [
    'HS256 keyed with the public JWK JSON',
    () =>
      new SignJWT(claims())
        .setProtectedHeader({ alg: 'HS256', kid: 'a1' })
        .sign(new TextEncoder().encode(publicJwkJson)),
    'token_algorithm_refused',
  ],
  [
    'HS256 keyed with the public PEM',
    () =>
      new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'a1' }).sign(new TextEncoder().encode(publicPem)),
    'token_algorithm_refused',
  ],
  [
    'HS256 keyed with the raw public key x',
    () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'a1' }).sign(base64url.decode(a1.publicJwk.x!)),
    'token_algorithm_refused',
  ],
  [
    'HS256 with a random secret',
    () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32)),
    'token_algorithm_refused',
  ],
  [
    'HS512 with a random secret',
    () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS512' }).sign(randomBytes(64)),
    'token_algorithm_refused',
  ],
  [
    'EdDSA token for an issuer that only allows ES256',
    () => sign(claims({ iss: ISS_B }), a1),
    'token_algorithm_refused',
  ],
  // Token type (RFC 8725 explicit typing): only the access-token type the issuer is configured for.
  ['typ JWT (an ID token of the same issuer)', () => sign(claims(), a1, { typ: 'JWT' }), 'token_type_invalid'],
  ['no typ at all', () => sign(claims(), a1, { typ: undefined }), 'token_type_invalid'],
  ['typ id+jwt', () => sign(claims(), a1, { typ: 'id+jwt' }), 'token_type_invalid'],
  ['typ logout+jwt', () => sign(claims(), a1, { typ: 'logout+jwt' }), 'token_type_invalid'],
  ['typ at+jwt with a suffix', () => sign(claims(), a1, { typ: 'at+jwt2' }), 'token_type_invalid'],
  ['typ not a string', () => sign(claims(), a1, { typ: ['at+jwt'] }), 'token_type_invalid'],
  // Time.
  ['expired', () => sign(claims({ iat: T - 400, exp: T - 100 })), 'token_expired'],
  ['expired just beyond the leeway', () => sign(claims({ iat: T - 300, exp: T - 31 })), 'token_expired'],
  ['nbf in the future', () => sign(claims({ nbf: T + 120 })), 'token_not_yet_valid'],
  ['iat in the future', () => sign(claims({ iat: T + 120, exp: T + 400 })), 'token_not_yet_valid'],
  ['lifetime of one hour', () => sign(claims({ iat: T - 10, exp: T + 3590 })), 'token_lifetime_too_long'],
  [
    'lifetime of one hour, issued long ago',
    () => sign(claims({ iat: T - 3000, exp: T + 600 })),
    'token_lifetime_too_long',
  ],
  // Audience and issuer.
  ['wrong aud', () => sign(claims({ aud: 'node-2' })), 'token_audience_invalid'],
  ['aud list without us', () => sign(claims({ aud: ['node-2', 'node-3'] })), 'token_audience_invalid'],
  ['missing aud', () => sign(claims({ aud: undefined })), 'token_audience_invalid'],
  ['wrong iss', () => sign(claims({ iss: 'https://evil.example' })), 'token_issuer_unknown'],
  ['missing iss', () => sign(claims({ iss: undefined })), 'token_issuer_unknown'],
  ['iss not a string', () => sign(claims({ iss: [ISS_A] })), 'token_issuer_unknown'],
  // Keys and signatures.
  ['unknown kid', () => sign(claims(), { ...a1, kid: 'zz' }), 'token_key_unknown'],
  ['kid of the other issuer', () => sign(claims(), { ...a1, kid: 'b1' }), 'token_key_unknown'],
  ['ES256 token naming an EdDSA kid', () => sign(claims({ iss: ISS_A }), { ...b1, kid: 'a1' }), 'token_key_unknown'],
  ['signed by another key with the right kid', () => sign(claims(), intruder), 'token_signature_invalid'],
  [
    'payload tampered after signing',
    () => `${vh}.${b64json({ ...claims(), roles: ['farmer', 'spaces', 'vms'] })}.${vs}`,
    'token_signature_invalid',
  ],
  [
    'org tampered after signing',
    () => `${vh}.${b64json({ ...claims(), org: 'victim' })}.${vs}`,
    'token_signature_invalid',
  ],
  ['signature stripped', () => `${vh}.${vp}.`, 'token_signature_invalid'],
  [
    'signature of another token',
    async () => `${vh}.${vp}.${(await sign(claims({ sub: 'mallory' }))).split('.')[2]}`,
    'token_signature_invalid',
  ],
  // Claims.
  ['missing iat', () => sign(claims({ iat: undefined })), 'token_claims_invalid'],
  ['missing exp', () => sign(claims({ exp: undefined })), 'token_claims_invalid'],
  ['iat not a number', () => sign(claims({ iat: String(T) })), 'token_claims_invalid'],
  ['nbf not a number', () => sign(claims({ nbf: 'soon' })), 'token_claims_invalid'],
  ['missing roles', () => sign(claims({ roles: undefined })), 'token_claims_invalid'],
  ['roles not an array', () => sign(claims({ roles: 'farmer' })), 'token_claims_invalid'],
  ['roles with a non-string', () => sign(claims({ roles: ['farmer', 1] })), 'token_claims_invalid'],
  ['empty roles', () => sign(claims({ roles: [] })), 'token_claims_invalid'],
  ['only unknown roles', () => sign(claims({ roles: ['admin', 'root', 'FARMER'] })), 'token_claims_invalid'],
  ['missing org', () => sign(claims({ org: undefined })), 'token_claims_invalid'],
  ['empty org', () => sign(claims({ org: '' })), 'token_claims_invalid'],
  ['org not a string', () => sign(claims({ org: { name: 'acme' } })), 'token_claims_invalid'],
  ['missing sub', () => sign(claims({ sub: undefined })), 'token_claims_invalid'],
  // Garbage.
  ['undefined', () => undefined, 'token_missing'],
  ['empty string', () => '', 'token_missing'],
  ['a.b', () => 'a.b', 'token_malformed'],
  ['a.b.c', () => 'a.b.c', 'token_malformed'],
  ['four segments', () => `${valid}.x`, 'token_malformed'],
  ['random base64', () => randomBytes(96).toString('base64'), 'token_malformed'],
  [
    'random base64url in three parts',
    () => [12, 40, 64].map((n) => randomBytes(n).toString('base64url')).join('.'),
    'token_malformed',
  ],
  ['100 KB', () => 'A'.repeat(100 * 1024), 'token_malformed'],
  ['100 KB in JWS shape', () => `${vh}.${'A'.repeat(100 * 1024)}.${vs}`, 'token_malformed'],
  ['spaces around a valid token', () => ` ${valid} `, 'token_malformed'],
  ['header not JSON', () => `${base64url.encode('hello')}.${vp}.${vs}`, 'token_malformed'],
  ['payload not JSON', () => `${vh}.${base64url.encode('hello')}.${vs}`, 'token_malformed'],
  ['payload a JSON array', () => `${vh}.${b64json([1, 2])}.${vs}`, 'token_malformed'],
  [
    'a JWE-shaped token',
    () => `${b64json({ alg: 'dir', enc: 'A256GCM' })}..${'A'.repeat(16)}.${'A'.repeat(16)}.${'A'.repeat(22)}`,
    'token_malformed',
  ],
];

for (const [name, make, code] of attacks) {
  test(`refused: ${name} -> ${code}`, async () => {
    await refusal(await make(), code);
  });
}

test('HMAC tokens are refused before any key is looked up', async () => {
  let lookups = 0;
  const jwks = createLocalJWKSet({ keys: [a1.publicJwk] });
  const v = createTokenVerifier({
    issuers: [{ issuer: ISS_A, keys: (h, t) => (lookups++, jwks(h, t)) }],
    audiences: [NODE],
  });
  const forged = await new SignJWT(claims())
    .setProtectedHeader({ alg: 'HS256', kid: 'a1' })
    .sign(new TextEncoder().encode(publicJwkJson));
  await refusal(forged, 'token_algorithm_refused', v);
  await refusal(`${b64json({ alg: 'none' })}.${vp}.`, 'token_algorithm_refused', v);
  assert.equal(lookups, 0);
  await v(valid, at);
  assert.equal(lookups, 1);
});

test('the token type is compared as a media type, and is set per issuer', async () => {
  for (const typ of ['at+jwt', 'AT+JWT', 'application/at+jwt', 'Application/At+JWT']) {
    assert.ok(await verify(await sign(claims(), a1, { typ }), at), typ);
  }
  const plain = createTokenVerifier({
    issuers: [{ issuer: ISS_A, keys: { keys: [a1.publicJwk] }, tokenType: 'JWT' }],
    audiences: [NODE],
  });
  assert.ok(await plain(await sign(claims(), a1, { typ: 'JWT' }), at));
  await refusal(await sign(claims(), a1), 'token_type_invalid', plain);
  await refusal(await sign(claims(), a1, { typ: undefined }), 'token_type_invalid', plain);
  // A forged token of the right type still fails on its signature first: typ is read only after it verified.
  await refusal(await sign(claims(), intruder, { typ: 'JWT' }), 'token_signature_invalid');
  for (const tokenType of ['', 'at jwt', 'text/html', 'application/', 'a'.repeat(80)]) {
    assert.throws(
      () =>
        createTokenVerifier({
          issuers: [{ issuer: ISS_A, keys: { keys: [a1.publicJwk] }, tokenType }],
          audiences: [NODE],
        }),
      TypeError,
      tokenType,
    );
  }
});

test('no policy may accept tokens living longer than 15 minutes', () => {
  const keys = { keys: [a1.publicJwk] };
  for (const maxLifetimeSeconds of [901, 3600, 86400, Infinity, 0, -1, NaN]) {
    assert.throws(
      () => createTokenVerifier({ issuers: [{ issuer: ISS_A, keys }], audiences: [NODE], maxLifetimeSeconds }),
      TypeError,
      String(maxLifetimeSeconds),
    );
  }
  assert.ok(createTokenVerifier({ issuers: [{ issuer: ISS_A, keys }], audiences: [NODE], maxLifetimeSeconds: 900 }));
});

test('within the clock leeway a token passes', async () => {
  // Expired 20 s ago, not before 20 s from now, issued 20 s from now: all inside 30 s.
  assert.ok(await verify(await sign(claims({ iat: T - 280, exp: T - 20 })), at));
  assert.ok(await verify(await sign(claims({ nbf: T + 20 })), at));
  assert.ok(await verify(await sign(claims({ iat: T + 20, exp: T + 320 })), at));
  // Exactly the maximum lifetime is fine; one second more is not.
  assert.ok(await verify(await sign(claims({ iat: T - 100, exp: T + 800 })), at));
  await refusal(await sign(claims({ iat: T - 100, exp: T + 801 })), 'token_lifetime_too_long');
});

test('the policy sets lifetime and leeway', async () => {
  const strict = createTokenVerifier({ ...policy, maxLifetimeSeconds: 60, clockToleranceSeconds: 0 });
  await refusal(await sign(claims({ iat: T - 10, exp: T + 290 })), 'token_lifetime_too_long', strict);
  await refusal(await sign(claims({ iat: T - 70, exp: T - 10 })), 'token_expired', strict);
  assert.ok(await strict(await sign(claims({ iat: T - 10, exp: T + 50 })), at));
});

test('unknown roles are ignored, not granted', async () => {
  const p = await verify(await sign(claims({ roles: ['admin', 'vms', 'root', 'vms'] })), at);
  assert.deepEqual([...p.roles], ['vms']);
});

test('requireRole passes on any one of the roles and refuses with role_missing otherwise', async () => {
  const p: Principal = await verify(valid, at);
  requireRole(p, 'spaces');
  requireRole(p, 'farmer', 'monitor');
  for (const anyOf of [['farmer'], ['vms', 'storage'], []] as const) {
    assert.throws(
      () => requireRole(p, ...anyOf),
      (err: unknown) => err instanceof OcsError && err.code === 'role_missing' && err.status === 403,
    );
  }
});

test('bearerToken reads the Authorization header', () => {
  assert.equal(bearerToken(`Bearer ${valid}`), valid);
  assert.equal(bearerToken(`bearer  ${valid}`), valid);
  const cases: [string | undefined, ErrorCode][] = [
    [undefined, 'token_missing'],
    ['', 'token_missing'],
    ['   ', 'token_missing'],
    ['Bearer', 'token_missing'],
    ['Bearer ', 'token_missing'],
    [`Basic ${valid}`, 'token_malformed'],
    [`Bearer ${valid} extra`, 'token_malformed'],
    [`Bearer${valid}`, 'token_malformed'],
    [`Bearer ${valid}\r\nX-Evil: 1`, 'token_malformed'],
  ];
  for (const [header, code] of cases) {
    assert.throws(
      () => bearerToken(header),
      (err: unknown) => err instanceof OcsError && err.code === code && !(header && err.message.includes(valid)),
      String(header),
    );
  }
});

test('configuration mistakes throw at start-up', () => {
  const keys = { keys: [a1.publicJwk] };
  assert.throws(() => createTokenVerifier({ issuers: [{ issuer: ISS_A, keys }], audiences: [] }), TypeError);
  assert.throws(
    () =>
      createTokenVerifier({ issuers: [{ issuer: ISS_A, keys, algorithms: ['HS256' as never] }], audiences: [NODE] }),
    TypeError,
  );
  assert.throws(
    () =>
      createTokenVerifier({
        issuers: [
          { issuer: ISS_A, keys },
          { issuer: ISS_A, keys },
        ],
        audiences: [NODE],
      }),
    TypeError,
  );
  assert.throws(() =>
    createTokenVerifier({ issuers: [{ issuer: ISS_A, keys: { keys: 'nope' } as never }], audiences: [NODE] }),
  );
});

test('a key resolver that fails unexpectedly never leaks a raw error', async () => {
  const v = createTokenVerifier({
    issuers: [
      {
        issuer: ISS_A,
        keys: () => {
          throw new Error('socket hang up');
        },
      },
    ],
    audiences: [NODE],
  });
  await refusal(valid, 'token_malformed', v);
});
