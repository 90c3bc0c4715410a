import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base64urlnopad } from '@scure/base';
import {
  generatePrivateKey,
  isOcsError,
  readDelegation,
  signDelegation,
  verifyDelegation,
  type DelegationGrant,
} from '@ocs/protocol';

const owner = generatePrivateKey();
const other = generatePrivateKey();
const orchestrator = generatePrivateKey();
const SPACE = `sp_${'b'.repeat(20)}`;
const NOW = Date.parse('2026-12-06T12:00:00Z');
const FP = Array.from({ length: 32 }, () => 'AB').join(':');

function grant(over: Partial<DelegationGrant> = {}): DelegationGrant {
  return {
    v: 1,
    spaceId: SPACE,
    org: 'org-a',
    ownerKey: owner.publicKey.toBase64url(),
    nodes: [{ url: 'https://node-b.example:8443', fingerprint: FP }],
    orchestrators: [orchestrator.publicKey.toBase64url()],
    issuedAt: new Date(NOW - 60_000).toISOString(),
    notAfter: new Date(NOW + 86400_000).toISOString(),
    ...over,
  };
}
const expect = { spaceId: SPACE, ownerKey: owner.publicKey.toBase64url(), now: NOW };

function refusal(f: () => unknown, message: RegExp): void {
  assert.throws(f, (err: unknown) => {
    assert.ok(isOcsError(err), `not an OcsError: ${String(err)}`);
    assert.equal(err.code, 'delegation_invalid');
    assert.equal(err.status, 403);
    assert.match(err.message, message);
    return true;
  });
}

test('a delegation the owner signed reads back as its grant, and is a compact JWS any JOSE library reads', () => {
  const jws = signDelegation(owner, grant());
  assert.deepEqual(verifyDelegation(jws, expect), grant());
  const [h, p, s] = jws.split('.');
  assert.deepEqual(JSON.parse(new TextDecoder().decode(base64urlnopad.decode(h!))), {
    alg: 'EdDSA',
    typ: 'ocs-delegation+jws',
  });
  assert.equal(JSON.parse(new TextDecoder().decode(base64urlnopad.decode(p!))).spaceId, SPACE);
  assert.equal(base64urlnopad.decode(s!).length, 64);
});

test('a delegation for another space, another owner key, or past its end is refused, saying which', () => {
  const jws = signDelegation(owner, grant());
  refusal(() => verifyDelegation(jws, { ...expect, spaceId: `sp_${'c'.repeat(20)}` }), /another space/);
  refusal(() => verifyDelegation(jws, { ...expect, ownerKey: other.publicKey.toBase64url() }), /owner key/);
  refusal(() => verifyDelegation(jws, { ...expect, now: NOW + 2 * 86400_000 }), /expired/);
  refusal(() => verifyDelegation(jws, { ...expect, now: NOW - 3600_000 }), /future/);
});

test('a grant signed by another key than the one it names, or altered after signing, does not verify', () => {
  // Another key signs a grant naming the owner's key: the signature is checked against the named key.
  const forged = signDelegation(other, grant({ ownerKey: other.publicKey.toBase64url() }));
  const [h, , s] = forged.split('.');
  const payload = base64urlnopad.encode(new TextEncoder().encode(JSON.stringify(grant())));
  refusal(() => readDelegation(`${h}.${payload}.${s}`), /signature/);
  // The owner's own delegation, widened to one more orchestrator.
  const jws = signDelegation(owner, grant());
  const [h2, , s2] = jws.split('.');
  const widened = grant({ orchestrators: [orchestrator.publicKey.toBase64url(), other.publicKey.toBase64url()] });
  const p2 = base64urlnopad.encode(new TextEncoder().encode(JSON.stringify(widened)));
  refusal(() => readDelegation(`${h2}.${p2}.${s2}`), /signature/);
});

test('anything but the one header, a malformed grant or a grant that allows nothing is refused', () => {
  const jws = signDelegation(owner, grant());
  const [, p, s] = jws.split('.');
  const none = base64urlnopad.encode(
    new TextEncoder().encode(JSON.stringify({ alg: 'none', typ: 'ocs-delegation+jws' })),
  );
  refusal(() => readDelegation(`${none}.${p}.${s}`), /header/);
  refusal(() => readDelegation('a.b'), /compact JWS/);
  refusal(() => readDelegation('x'.repeat(9000)), /compact JWS/);
  refusal(() => readDelegation(`${jws.split('.')[0]}.!!!.${s}`), /compact JWS/);
  assert.throws(() => signDelegation(owner, grant({ nodes: [], orchestrators: [] })), /at least one/);
  assert.throws(
    () => signDelegation(owner, grant({ notAfter: new Date(NOW + 400 * 86400_000).toISOString() })),
    /366 days/,
  );
  assert.throws(() => signDelegation(other, grant()), /signed by the owner key it names/);
});
