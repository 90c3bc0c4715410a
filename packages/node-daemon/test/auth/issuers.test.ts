/**
 * Remote issuers against a real HTTPS JWKS server on 127.0.0.1 with a self-signed certificate
 * that only the issuer's `caFile` trusts. The server rotates its key mid-test, goes down and
 * answers garbage; the daemon's verifier follows the rotation and never fails with a raw error.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { OcsError, createTokenVerifier, type ErrorCode } from '@ocs/protocol';
import { resolveConfig } from '#src/config.js';
import { ManualClock } from '@ocs/node-daemon/testing';
import { createLogger } from '#src/logger.js';
import { loadOrCreateTls } from '#src/tls.js';
import { createNodeIssuers } from '#src/auth/issuers.js';
import { fetchJwks } from '#src/auth/jwks-fetch.js';

const ISS = 'https://idp.test';
const NODE = 'node-1';
const dir = mkdtempSync(join(tmpdir(), 'ocs-jwks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const tls = await loadOrCreateTls({ stateDir: dir, names: ['jwks.test'] });
const caFile = join(dir, 'ca.pem');
writeFileSync(caFile, tls.cert);

interface Signer {
  privateKey: CryptoKey;
  jwk: JWK;
  kid: string;
}
async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA');
  return { privateKey, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' } };
}

/** The issuer's JWKS endpoint: what it answers can be changed at any time. */
const served = { status: 200, body: '', hits: 0 };
let server: Server | undefined;
async function up(port = 0): Promise<number> {
  served.hits = 0;
  server = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    served.hits++;
    res.writeHead(served.status, { 'content-type': 'application/json' });
    res.end(served.body);
  });
  await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve));
  const addr = server.address();
  return typeof addr === 'object' && addr ? addr.port : 0;
}
async function down(): Promise<void> {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
}
after(down);
const serve = (...keys: Signer[]) => {
  served.status = 200;
  served.body = JSON.stringify({ keys: keys.map((k) => k.jwk) });
};

function setup(port: number, issuer: Record<string, unknown> = { caFile }) {
  const clock = new ManualClock(Date.now());
  const logs: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) }),
  });
  const config = resolveConfig({
    auth: {
      devIssuer: false,
      issuers: [{ issuer: ISS, jwksUri: `https://127.0.0.1:${port}/jwks.json`, ...issuer }],
      remoteKeys: { refreshSeconds: 60, cooldownSeconds: 5, maxStaleSeconds: 600 },
    },
  });
  let changes = 0;
  const issuers = createNodeIssuers({ config, devIssuer: undefined, logger, clock, onKeysChanged: () => changes++ });
  const verify = createTokenVerifier({ issuers: issuers.policy, audiences: [NODE] });
  const token = (k: Signer) =>
    new SignJWT({ org: 'acme', roles: ['spaces'] })
      .setProtectedHeader({ alg: 'EdDSA', kid: k.kid, typ: 'at+jwt' })
      .setIssuer(ISS)
      .setAudience(NODE)
      .setSubject('alice')
      .setIssuedAt(Math.floor(clock.now() / 1000))
      .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
      .sign(k.privateKey);
  const ok = async (k: Signer) =>
    assert.equal((await verify(await token(k), { now: new Date(clock.now()) })).subject, 'alice');
  const refused = async (k: Signer, code: ErrorCode) =>
    assert.rejects(
      async () => verify(await token(k), { now: new Date(clock.now()) }),
      (err: unknown) => {
        assert.ok(err instanceof OcsError, `a raw error escaped: ${String(err)}`);
        assert.equal(err.code, code, err.message);
        return true;
      },
    );
  return { clock, issuers, ok, refused, logs, changes: () => changes };
}

const k1 = await signer('k1');
const k2 = await signer('k2');

test('a remote issuer: fetched over HTTPS from a CA of its own, rotated by kid, handed on to space processes', async () => {
  const port = await up();
  serve(k1);
  const s = setup(port);
  await s.issuers.warm();
  assert.equal(served.hits, 1);
  await s.ok(k1);

  // Rotation: the issuer publishes k2 beside k1 and signs with k2. The unknown kid fetches again.
  serve(k1, k2);
  s.clock.advance(6_000);
  await s.ok(k2);
  assert.equal(served.hits, 2);
  // Then withdraws k1: once the set is due for refresh, a token signed by k1 is refused.
  serve(k2);
  s.clock.advance(61_000);
  await s.refused(k1, 'token_key_unknown');
  await s.ok(k2);
  assert.equal(s.changes(), 3);

  // What the space processes get: the set as fetched, never the URI.
  const [held] = s.issuers.remoteKeys().issuers;
  assert.deepEqual(
    held?.jwks.keys.map((k) => k.kid),
    ['k2'],
  );
  const [forSpace] = s.issuers.forSpace();
  assert.equal(forSpace?.remote, true);
  assert.equal(forSpace?.tokenType, 'at+jwt');
  assert.equal(forSpace?.fetchedAt, held?.fetchedAt);
  assert.ok(!JSON.stringify(forSpace).includes('jwks.json'));
  await down();
});

test('the JWKS server down, answering garbage or errors: no crash, no raw error, the last good set serves', async () => {
  const port = await up();
  serve(k1);
  const s = setup(port);
  await s.issuers.warm();
  await s.ok(k1);
  const answers: [number, string][] = [
    [200, '<html>not json</html>'],
    [200, '{"keys": "nope"}'],
    [200, '[]'],
    [500, 'oops'],
    [302, ''],
    [200, `{"keys": [${'"x",'.repeat(200_000)}"x"]}`],
  ];
  for (const [status, body] of answers) {
    served.status = status;
    served.body = body;
    s.clock.advance(61_000);
    await s.ok(k1);
    // A kid nobody published, right after a failed look: the node cannot tell, so it says "retry".
    await s.refused(k2, 'unavailable');
  }
  // A symmetric key dressed as k2 is dropped, never trusted: an HMAC "signature" by it finds no key.
  served.status = 200;
  served.body = JSON.stringify({ keys: [k1.jwk, { kty: 'oct', k: 'c2VjcmV0', kid: 'k2' }] });
  s.clock.advance(61_000);
  await s.ok(k1);
  await s.refused(k2, 'token_key_unknown');
  assert.deepEqual(
    s.issuers.remoteKeys().issuers[0]?.jwks.keys.map((k) => k.kid),
    ['k1'],
  );
  await down();
  s.clock.advance(61_000);
  await s.ok(k1);
  // Past maxStale without a good fetch, the old set is no longer trusted.
  s.clock.advance(600_000);
  await s.refused(k1, 'unavailable');
  assert.deepEqual(s.issuers.remoteKeys().issuers, []);
  // The log says why, and never carries what the server sent.
  const warnings = s.logs.filter((l) => l.includes('issuer keys could not be fetched'));
  assert.ok(warnings.length >= answers.length, `${warnings.length} warnings`);
  assert.ok(!s.logs.some((l) => l.includes('not json</html>') || l.includes('oops')));
  // And back up on the same port: the next look finds it again.
  await up(port);
  serve(k1);
  s.clock.advance(6_000);
  await s.ok(k1);
  await down();
});

test('a server whose certificate the issuer was not told to trust is refused (unavailable), not followed', async () => {
  const port = await up();
  serve(k1);
  const s = setup(port, {});
  await s.issuers.warm();
  assert.equal(served.hits, 0, 'the TLS handshake failed before any request');
  await s.refused(k1, 'unavailable');
  await assert.rejects(fetchJwks(`https://127.0.0.1:${port}/jwks.json`), /self-signed|certificate/);
  await assert.rejects(fetchJwks(`http://127.0.0.1:${port}/jwks.json`), /only fetched over https/);
  await down();
});

test('configuration mistakes fail the boot naming the field', () => {
  const base = { jwksUri: 'https://127.0.0.1:1/jwks.json' };
  assert.throws(() => setup(1, { ...base, caFile: join(dir, 'missing.pem') }), /\/auth\/issuers\/0\/caFile/);
});
