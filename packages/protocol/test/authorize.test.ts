import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MemoryNonceStore,
  OcsError,
  authorize,
  generatePrivateKey,
  refuseRepeatedHeaders,
  signRequest,
  type ErrorCode,
  type IncomingRequest,
  type Principal,
  type Role,
} from '@ocs/protocol';

const owner = generatePrivateKey();
const URL_ = 'https://node-1.example:8443/v1/spaces/sp_x/api/status';

function principal(org: string, roles: Role[] = ['storage']): Principal {
  return {
    subject: 'alice',
    issuer: 'iss',
    org,
    roles: new Set(roles),
    issuedAt: new Date(0),
    expiresAt: new Date(8.64e15),
  };
}

/** A token verifier that knows two tokens: one of org-a, one of org-b. */
const verifyToken = async (t: string | undefined): Promise<Principal> => {
  if (t === 'tok-a') return principal('org-a');
  if (t === 'tok-b') return principal('org-b');
  throw new OcsError('token_signature_invalid', 'no');
};

/** A request signed by the owner, with the header lines exactly as a client would send them. */
async function signed(lines: [string, string][]): Promise<IncomingRequest> {
  const headers: Record<string, string> = {};
  // As Node builds req.headers: the first Authorization or Host wins, the second is dropped.
  for (const [k, v] of lines) if (headers[k.toLowerCase()] === undefined) headers[k.toLowerCase()] = v;
  const sig = await signRequest(
    { method: 'GET', url: URL_, headers },
    { keyId: owner.publicKey.fingerprint(), sign: (m) => owner.sign(m) },
  );
  Object.assign(headers, sig);
  const raw = [...lines, ...Object.entries(sig)].flat();
  return { method: 'GET', url: URL_, headers, rawHeaders: raw };
}

function options(store: MemoryNonceStore, extra: { org?: string } = {}) {
  return {
    verifyToken,
    roles: ['storage'] as Role[],
    signature: { resolveKey: () => owner.publicKey.bytes, nonceStore: store },
    ...extra,
  };
}

async function refused(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof OcsError && err.code === code);
}

test('a request with two Authorization headers is refused, before any token or nonce is looked at', async () => {
  const shapes: [string, [string, string][]][] = [
    [
      'same case',
      [
        ['authorization', 'Bearer tok-a'],
        ['authorization', 'Bearer tok-b'],
      ],
    ],
    [
      'different case',
      [
        ['Authorization', 'Bearer tok-a'],
        ['AUTHORIZATION', 'Bearer tok-a'],
      ],
    ],
    [
      'second one empty',
      [
        ['Authorization', 'Bearer tok-a'],
        ['authorization', ''],
      ],
    ],
    [
      'two Host lines',
      [
        ['host', 'node-1.example:8443'],
        ['authorization', 'Bearer tok-a'],
        ['Host', 'node-2.example:8443'],
      ],
    ],
  ];
  for (const [name, lines] of shapes) {
    const store = new MemoryNonceStore();
    const req = await signed(lines);
    await assert.rejects(
      authorize(req, options(store)),
      (err: unknown) => err instanceof OcsError && err.code === 'invalid_request' && err.status === 400,
      name,
    );
    assert.equal(store.size, 0, `${name}: no nonce stored`);
  }
  // The same request with one Authorization line passes (the check is not a false alarm).
  const store = new MemoryNonceStore();
  const ok = await authorize(
    await signed([
      ['host', 'node-1.example:8443'],
      ['Authorization', 'Bearer tok-a'],
    ]),
    options(store),
  );
  assert.equal(ok.principal?.org, 'org-a');
  assert.equal(store.size, 1);
});

test('a second Signature, Signature-Input, Content-Digest, Idempotency-Key or Ocs-Node line is refused before the signature is looked at', async () => {
  for (const name of ['Signature-Input', 'signature', 'Content-Digest', 'Idempotency-Key', 'Ocs-Node']) {
    const store = new MemoryNonceStore();
    const req = await signed([['authorization', 'Bearer tok-a']]);
    // One more line of the field, as a relay would add it; for the signature fields, the very
    // value already there (a dictionary's member repeated, which a parser would let override).
    const again = String(req.headers[name.toLowerCase()] ?? 'once');
    const lines = name.startsWith('Sig') ? [] : [name, again];
    const twice = { ...req, rawHeaders: [...req.rawHeaders, ...lines, name, again] };
    await assert.rejects(
      authorize(twice, options(store)),
      (err: unknown) =>
        err instanceof OcsError && err.code === 'invalid_request' && err.details?.header === name.toLowerCase(),
      name,
    );
    assert.equal(store.size, 0, `${name}: no nonce stored`);
  }
});

test('refuseRepeatedHeaders looks at the raw lines, any case, and only at the fields it guards', () => {
  refuseRepeatedHeaders(['Accept', 'a', 'accept', 'b', 'Authorization', 'x']);
  assert.throws(
    () => refuseRepeatedHeaders(['Authorization', 'x', 'X-Other', 'y', 'authorization', 'x']),
    (err: unknown) => err instanceof OcsError && err.details?.header === 'authorization',
  );
  assert.throws(() => refuseRepeatedHeaders(['a', '1', 'a', '2'], ['a']), OcsError);
});

test('with org set, a token of another org is not_found, before the signature and its nonce', async () => {
  const store = new MemoryNonceStore();
  const other = await signed([['authorization', 'Bearer tok-b']]);
  await refused(authorize(other, options(store, { org: 'org-a' })), 'not_found');
  assert.equal(store.size, 0);
  // Roles are still checked first, as the daemon does: a token without them is role_missing.
  await refused(authorize(other, { ...options(store, { org: 'org-a' }), roles: ['vms'] }), 'role_missing');
  const mine = await signed([['authorization', 'Bearer tok-a']]);
  assert.equal((await authorize(mine, options(store, { org: 'org-a' }))).principal?.org, 'org-a');
  // An org rule needs a token even where the route lists no role.
  await refused(
    authorize({ ...mine, headers: {}, rawHeaders: [] }, { verifyToken, roles: [], org: 'org-a' }),
    'token_missing',
  );
});
