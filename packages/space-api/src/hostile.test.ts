/**
 * Items: malformed ids and floods, on the space API. Hostile names and ids get a JSON 4xx with
 * a stable code, and an owner's stream of refused requests leaves a bounded journal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { generateKeyPairSync, sign as nodeSign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { contentDigest, createTokenVerifier, mintToken, parsePublicKey, signRequest } from '@ocs/protocol';
import { createSpaceApp } from './app.js';
import { openSpaceState } from './state.js';
import type { SpaceProcessConfig } from './config.js';

const SPACE = 'sp_aaaaaaaaaaaaaaaaaaaa';
const PREFIX = `/v1/spaces/${SPACE}/api`;
const HOST = 'node.test:8443';
const ISSUER = 'https://issuer.test';

async function startSpace(t: { after(fn: () => void | Promise<void>): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-space-hostile-'));
  const owner = generateKeyPairSync('ed25519');
  const ownerX = owner.publicKey.export({ format: 'jwk' }).x!;
  const issuer = generateKeyPairSync('ed25519');
  const jwk = { ...issuer.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA' };
  const config: SpaceProcessConfig = {
    spaceId: SPACE,
    ownerKey: ownerX,
    org: 'org-a',
    resources: { cpuMillicores: 1000, memoryBytes: 256 * 1024 * 1024, storageBytes: 64 * 1024 * 1024 },
    auth: {
      issuers: [],
      audiences: ['node-test'],
      maxTokenLifetimeSeconds: 900,
      clockToleranceSeconds: 5,
      remoteKeys: { refreshSeconds: 300, cooldownSeconds: 30, maxStaleSeconds: 3600 },
    },
    socket: join(dir, 'api.sock'),
    dataDir: dir,
    idleSeconds: 60,
    authorities: ['node.test:8443'],
    tlsFingerprint: 'AA:BB',
  };
  const state = openSpaceState(dir);
  const verifier = createTokenVerifier({
    issuers: [{ issuer: ISSUER, keys: { keys: [jwk] } as never }],
    audiences: ['node-test'],
    maxLifetimeSeconds: 900,
  });
  const app = createSpaceApp({
    config,
    verifyToken: (tok) => verifier(tok),
    state,
    broker: async () => {
      throw new Error('no broker in these tests');
    },
    logger: pino({ level: 'silent' }),
  });
  const server = createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(config.socket, resolve));
  t.after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    state.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const token = await mintToken({
    privateKey: issuer.privateKey,
    kid: 'k1',
    alg: 'EdDSA',
    issuer: ISSUER,
    audience: 'node-test',
    subject: 'owner',
    org: 'org-a',
    roles: ['storage', 'containers', 'vms'],
  });
  const fingerprint = parsePublicKey(ownerX).fingerprint();
  async function send(method: string, path: string, signed: boolean, o: { body?: Uint8Array; type?: string } = {}) {
    const headers: Record<string, string> = { host: HOST };
    if (o.body) {
      headers['content-length'] = String(o.body.length);
      headers['content-digest'] = contentDigest(o.body);
      if (o.type) headers['content-type'] = o.type;
    }
    if (signed) {
      headers.authorization = `Bearer ${token}`;
      headers['ocs-node'] = 'AA:BB';
      Object.assign(
        headers,
        await signRequest(
          { method, url: `https://${HOST}${path}`, headers },
          { keyId: fingerprint, sign: (m) => new Uint8Array(nodeSign(null, m, owner.privateKey)) },
        ),
      );
    }
    return new Promise<{ status: number; type: string; code: string | undefined; text: string }>((resolve, reject) => {
      const req = request({ socketPath: config.socket, method, path, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let code: string | undefined;
          try {
            code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
          } catch {
            code = undefined;
          }
          resolve({ status: res.statusCode!, type: String(res.headers['content-type'] ?? ''), code, text });
        });
      });
      req.on('error', reject);
      req.end(o.body);
    });
  }
  return { dir, state, send };
}

test('hostile ids on the space API: always a JSON 4xx with its code, never a 500', async (t) => {
  const s = await startSpace(t);
  // [method, path, code for an anonymous caller, code for the owner's signed request]
  const table: [string, string, string, string][] = [
    ['DELETE', `${PREFIX}/volumes/%00`, 'token_missing', 'invalid_request'],
    ['GET', `${PREFIX}/containers/%0a%1b`, 'token_missing', 'invalid_request'],
    ['GET', `${PREFIX}/vms/${'a'.repeat(300)}`, 'token_missing', 'invalid_request'],
    ['DELETE', `${PREFIX}/files/..%2F..%2Fetc%2Fpasswd`, 'token_missing', 'invalid_request'],
    ['POST', `${PREFIX}/containers/%E2%80%A8/start`, 'token_missing', 'invalid_request'],
    ['DELETE', `${PREFIX}/images/%ff%fe`, 'token_missing', 'invalid_request'],
    ['GET', `${PREFIX}/containers/${'%ed%a0%80'.repeat(30)}/logs`, 'token_missing', 'invalid_request'],
    ['GET', '/v1/spaces/sp_%0a%1b/api/status', 'not_owner', 'not_owner'],
    ['GET', `/v1/spaces/sp_${'a'.repeat(300)}/api/status`, 'not_owner', 'not_owner'],
    ['GET', `/v1/spaces/${SPACE}%00/api/status`, 'not_owner', 'not_owner'],
    ['GET', `${PREFIX}/no-such-route%00`, 'not_found', 'not_found'],
  ];
  for (const [method, path, anonymousCode, ownerCode] of table) {
    for (const signed of [false, true]) {
      const r = await s.send(method, path, signed);
      const label = `${signed ? 'owner' : 'anonymous'} ${method} ${path.slice(0, 70)}`;
      assert.ok(r.status >= 400 && r.status < 500, `${label}: ${r.status} ${r.text.slice(0, 120)}`);
      assert.match(r.type, /^application\/json/, label);
      assert.equal(r.code, signed ? ownerCode : anonymousCode, label);
    }
  }
});

test('the space API runs the same pipeline as the daemon: 405 for a known path, 415 for a body that is not JSON, strict UTF-8', async (t) => {
  const s = await startSpace(t);
  const json = (text: string) => new TextEncoder().encode(text);
  // A GET-only path asked with DELETE: the path exists, the method does not.
  const del = await s.send('DELETE', `${PREFIX}/status`, true);
  assert.equal(del.status, 405, del.text);
  assert.equal(del.code, 'method_not_allowed');
  const create = `${PREFIX}/containers`;
  const spec = '{"name":"c","image":"i","command":["x"],"cpuMillicores":100,"memoryBytes":33554432}';
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=iso-8859-1']) {
    const r = await s.send('POST', create, true, { body: json(spec), type });
    assert.equal(r.status, 415, `${type}: ${r.text}`);
    assert.equal(r.code, 'unsupported_media_type', type);
  }
  // 0xff in a free-text field: decoded lossily it would become U+FFFD and reach the broker (a 500
  // here, where there is none); decoded strictly it is the caller's error.
  const [head, tail] = spec.split('"x"') as [string, string];
  const bad = Buffer.concat([Buffer.from(`${head}"x`), Buffer.from([0xff]), Buffer.from(`"${tail}`)]);
  {
    const r = await s.send('POST', create, true, { body: new Uint8Array(bad), type: 'application/json' });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.code, 'invalid_request');
    assert.match(r.text, /UTF-8/);
  }
});

test('the space journal keeps a bounded number of refusals, and one summary of the rest', async (t) => {
  const s = await startSpace(t);
  for (let i = 0; i < 500; i++) {
    const r = await s.send('DELETE', `${PREFIX}/volumes/%0a${i}`, true);
    assert.equal(r.code, 'invalid_request');
  }
  s.state.flush();
  const db = new BetterSqlite3(join(s.dir, 'state', 'space.db'), { readonly: true });
  try {
    const rows = db.prepare('SELECT op, target, outcome, detail FROM journal ORDER BY seq').all() as {
      op: string;
      target: string | null;
      outcome: string;
      detail: string | null;
    }[];
    const refused = rows.filter((r) => r.op === 'deleteVolume');
    assert.equal(refused.length, 60);
    // eslint-disable-next-line no-control-regex -- control characters are what is looked for
    for (const r of refused) assert.doesNotMatch(r.target ?? '', /[\n\u0000-\u001f]/);
    const summaries = rows.filter((r) => r.op === 'journal.refusals-dropped');
    assert.equal(summaries.length, 1);
    assert.equal((JSON.parse(summaries[0]!.detail!) as { dropped: number }).dropped, 440);
  } finally {
    db.close();
  }
});
