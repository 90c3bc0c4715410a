/**
 * The space process as a request that got past the daemon sees it: a real HTTP server on a
 * unix socket (so Node's own parser builds the headers), the space's own state, and a broker
 * double. The space process trusts the daemon for nothing: it checks org, headers and keys itself.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { pino } from 'pino';
import {
  OcsError,
  generatePrivateKey,
  signRequest,
  type BrokerArgs,
  type BrokerOp,
  type BrokerResult,
  type ErrorCode,
  type IssuerKeySets,
  type SpaceProcessConfig,
} from '@ocs/protocol';
import { createSpaceApp } from './app.js';
import { openSpaceState } from './state.js';
import { spaceTokenVerifier } from './token-verifier.js';
import type { BrokerCall } from './broker-client.js';

const SPACE = 'sp_aaaaaaaaaaaaaaaaaaaa';
const HOST = 'node-1.test:8443';
/** Two nodes' certificate fingerprints: this one, and another that shares its name and port. */
const NODE_FP = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, '0').toUpperCase()).join(':');
const OTHER_FP = NODE_FP.replace(/^00/, 'FF');
const LOCAL_ISS = 'ocs-dev:node-1';
const REMOTE_ISS = 'https://idp.test';
const dir = mkdtempSync(join(tmpdir(), 'ocs-space-app-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Signer {
  privateKey: CryptoKey;
  jwk: JWK;
  kid: string;
}
async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA');
  return { privateKey, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' } };
}
const local = await signer('dev-1');
const r1 = await signer('r1');
const r2 = await signer('r2');
const owner = generatePrivateKey();

let clock = Date.now();
/** What the daemon holds for the remote issuer, and whether its broker answers. */
const daemon = { keys: { keys: [r1.jwk] } as { keys: JWK[] }, fetchedAt: clock, down: false, asked: 0 };

const broker = (async <O extends BrokerOp>(op: O, _args: BrokerArgs<O>): Promise<BrokerResult<O>> => {
  if (op === 'issuerKeys') {
    daemon.asked++;
    if (daemon.down) throw new OcsError('unavailable', 'the broker is not reachable');
    const r: IssuerKeySets = { issuers: [{ issuer: REMOTE_ISS, jwks: daemon.keys, fetchedAt: daemon.fetchedAt }] };
    return r as BrokerResult<O>;
  }
  if (op === 'status') return { spaceId: SPACE } as unknown as BrokerResult<O>;
  throw new OcsError('not_found', 'not in this test');
}) as BrokerCall;

const config: SpaceProcessConfig = {
  spaceId: SPACE,
  ownerKey: owner.publicKey.toOpenSsh('owner@test'),
  org: 'org-a',
  resources: { cpuMillicores: 500, memoryBytes: 256 * 1024 * 1024, storageBytes: 64 * 1024 * 1024 },
  auth: {
    issuers: [
      { issuer: LOCAL_ISS, tokenType: 'at+jwt', jwks: { keys: [local.jwk] }, remote: false },
      { issuer: REMOTE_ISS, tokenType: 'at+jwt', jwks: { keys: [r1.jwk] }, remote: true, fetchedAt: clock },
    ],
    audiences: ['node-1'],
    maxTokenLifetimeSeconds: 900,
    clockToleranceSeconds: 30,
    remoteKeys: { refreshSeconds: 60, cooldownSeconds: 30, maxStaleSeconds: 600 },
  },
  authorities: ['node-1.test:8443'],
  tlsFingerprint: NODE_FP,
  socket: join(dir, 'api.sock'),
  dataDir: join(dir, 'data'),
  idleSeconds: 60,
};

const logger = pino({ level: 'silent' });
const verifier = spaceTokenVerifier(config.auth, broker, logger, () => clock);
const state = openSpaceState(config.dataDir);
after(() => state.close());
const app = createSpaceApp({
  config,
  verifyToken: (t) => verifier(t, { now: new Date(clock) }),
  state,
  broker,
  logger,
  now: () => clock,
});
const server = createServer(app.callback());
await new Promise<void>((resolve) => server.listen(config.socket, resolve));
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

function token(k: Signer, o: { org?: string; iss?: string } = {}): Promise<string> {
  const iat = Math.floor(clock / 1000);
  return new SignJWT({ org: o.org ?? 'org-a', roles: ['storage', 'monitor'] })
    .setProtectedHeader({ alg: 'EdDSA', kid: k.kid, typ: 'at+jwt' })
    .setIssuer(o.iss ?? LOCAL_ISS)
    .setAudience('node-1')
    .setSubject('alice')
    .setIssuedAt(iat)
    .setExpirationTime(iat + 300)
    .sign(k.privateKey);
}

/** GET …/status, signed by the owner for `node`, with the Authorization line(s) given, straight to the socket. */
async function status(authorization: string | string[], node = NODE_FP): Promise<{ status: number; code?: string }> {
  const path = `/v1/spaces/${SPACE}/api/status`;
  const first = Array.isArray(authorization) ? authorization[0]! : authorization;
  const sig = await signRequest(
    { method: 'GET', url: `https://${HOST}${path}`, headers: { authorization: first, 'ocs-node': node } },
    { keyId: owner.publicKey.fingerprint(), sign: (m) => owner.sign(m), created: Math.floor(clock / 1000) },
  );
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: config.socket,
        method: 'GET',
        path,
        // Raw header lines, so that two Authorization lines go out as two lines.
        headers: [
          'host',
          HOST,
          ...[authorization].flat().flatMap((a) => ['authorization', a]),
          'ocs-node',
          node,
          ...Object.entries(sig).flat(),
        ],
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code: string } };
          resolve({ status: res.statusCode ?? 0, ...(body.error ? { code: body.error.code } : {}) });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function expect(authorization: string | string[], code: ErrorCode | 200): Promise<void> {
  const r = await status(authorization);
  if (code === 200) assert.equal(r.status, 200, JSON.stringify(r));
  else assert.equal(r.code, code, JSON.stringify(r));
}

test('a token of another org is refused by the space process itself, even with the owner signature', async () => {
  await expect(`Bearer ${await token(local)}`, 200);
  await expect(`Bearer ${await token(local, { org: 'org-b' })}`, 'not_found');
  await expect(`Bearer ${await token(r1, { org: 'org-b', iss: REMOTE_ISS })}`, 'not_found');
});

test('a request signed for another node (same name, same port) is refused by the space process', async () => {
  const mine = `Bearer ${await token(local)}`;
  assert.deepEqual(await status(mine, OTHER_FP), { status: 421, code: 'misdirected_request' });
  // The same fingerprint in the form without colons, lower case, names this node.
  assert.equal((await status(mine, NODE_FP.replace(/:/g, '').toLowerCase())).status, 200);
});

test('two Authorization lines are refused, whichever comes first', async () => {
  const mine = `Bearer ${await token(local)}`;
  const theirs = `Bearer ${await token(local, { org: 'org-b' })}`;
  await expect([mine, theirs], 'invalid_request');
  await expect([theirs, mine], 'invalid_request');
  await expect([mine, mine], 'invalid_request');
  await expect(mine, 200);
});

test('a remote issuer rotates: the space process gets the new key from the daemon, and drops the old one', async () => {
  await expect(`Bearer ${await token(r1, { iss: REMOTE_ISS })}`, 200);
  assert.equal(daemon.asked, 0, 'the set from the config served without asking');
  // The daemon has fetched r2 (it verified the token before forwarding it): an unknown kid asks once.
  daemon.keys = { keys: [r1.jwk, r2.jwk] };
  daemon.fetchedAt = clock += 1000;
  await expect(`Bearer ${await token(r2, { iss: REMOTE_ISS })}`, 200);
  assert.equal(daemon.asked, 1);
  // The issuer withdrew r1 and the daemon knows: once this copy is due for refresh, r1 is refused.
  daemon.keys = { keys: [r2.jwk] };
  daemon.fetchedAt = clock += 61_000;
  await expect(`Bearer ${await token(r1, { iss: REMOTE_ISS })}`, 'token_key_unknown');
  await expect(`Bearer ${await token(r2, { iss: REMOTE_ISS })}`, 200);
  // The daemon's broker gone: the copy serves until it is stale, then `unavailable`, never a 500.
  daemon.down = true;
  clock += 61_000;
  await expect(`Bearer ${await token(r2, { iss: REMOTE_ISS })}`, 200);
  clock += 600_000;
  await expect(`Bearer ${await token(r2, { iss: REMOTE_ISS })}`, 'unavailable');
  // The daemon's own key set is untouched by all this.
  await expect(`Bearer ${await token(local)}`, 200);
  daemon.down = false;
  daemon.fetchedAt = clock;
  await expect(`Bearer ${await token(r2, { iss: REMOTE_ISS })}`, 200);
});
