/**
 * Tokens on a real node and in real space processes: a remote issuer served over HTTPS from
 * 127.0.0.1 (self-signed, trusted through the issuer's caFile) that rotates its key mid-test;
 * the token type; two Authorization lines on both APIs; another org's token inside a space
 * process; and what a config file must say about the dev issuer.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { cipherImplementation } from '@ocs/host';
import {
  generatePrivateKey,
  mintToken,
  signRequest,
  type CreateSpaceResponse,
  type Ed25519PrivateKey,
  type Role,
} from '@ocs/protocol';
import { daemonDir } from './daemon-process.js';
import { startTestNode, MiB, type TestNode } from './harness.js';

const ISS = 'https://idp.e2e.test';
const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the issuer: an HTTPS JWKS endpoint on 127.0.0.1 with a certificate nobody else trusts ----

const dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-jwks-'));
execFileSync('openssl', [
  'req',
  '-x509',
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
  '-keyout',
  join(dir, 'key.pem'),
  '-out',
  join(dir, 'ca.pem'),
  '-days',
  '2',
  '-subj',
  '/CN=jwks.e2e.test',
  '-addext',
  'subjectAltName=IP:127.0.0.1',
]);
const caFile = join(dir, 'ca.pem');

interface Signer {
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
  kid: string;
}
function signer(kid: string): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, kid, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' } };
}
const k1 = signer('k1');
const k2 = signer('k2');
const k3 = signer('k3');

const served = { body: '', hits: 0 };
const serve = (...keys: Signer[]) => void (served.body = JSON.stringify({ keys: keys.map((k) => k.jwk) }));
let jwksServer: Server | undefined;
let jwksPort = 0;
async function jwksUp(): Promise<void> {
  jwksServer = createServer({ cert: readFileSync(caFile), key: readFileSync(join(dir, 'key.pem')) }, (_req, res) => {
    served.hits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(served.body);
  });
  await new Promise<void>((resolve) => jwksServer!.listen(jwksPort, '127.0.0.1', resolve));
  const a = jwksServer.address();
  jwksPort = typeof a === 'object' && a ? a.port : 0;
}
async function jwksDown(): Promise<void> {
  if (!jwksServer) return;
  jwksServer.closeAllConnections();
  await new Promise<void>((resolve) => jwksServer!.close(() => resolve()));
  jwksServer = undefined;
}

// ---- the node ----

let t: TestNode;
before(async () => {
  serve(k1);
  await jwksUp();
  t = await startTestNode({
    auth: {
      issuers: [{ issuer: ISS, jwksUri: `https://127.0.0.1:${jwksPort}/jwks.json`, caFile }],
      remoteKeys: { refreshSeconds: 1, cooldownSeconds: 1, maxStaleSeconds: 60 },
    },
  });
});
after(async () => {
  await t?.stop();
  await jwksDown();
  rmSync(dir, { recursive: true, force: true });
});

/** A token of the remote issuer, signed by `k`; a fresh one each call (its jti differs). */
function remoteToken(k: Signer, roles: Role[], org = 'org-a'): Promise<string> {
  return mintToken({
    privateKey: k.privateKey,
    kid: k.kid,
    alg: 'EdDSA',
    issuer: ISS,
    audience: t.node.nodeId,
    subject: 'orchestrator',
    org,
    roles,
    tokenId: randomBytes(8).toString('hex'),
  });
}

interface Answer {
  status: number;
  code: string | undefined;
}

/**
 * One request, signed by `owner` when given, with the Authorization line(s) as given: to the
 * daemon over HTTPS, or with `socket` straight to a space process's unix socket (as root can).
 */
async function send(
  o: { method?: string; path: string; authorization: string | string[]; owner?: Ed25519PrivateKey },
  socket?: string,
): Promise<Answer> {
  const method = o.method ?? 'GET';
  const host = new URL(t.node.url).host;
  const lines = [o.authorization].flat();
  const sig = o.owner
    ? await signRequest(
        {
          method,
          url: `https://${host}${o.path}`,
          headers: { authorization: lines[0]!, 'ocs-node': t.node.tls.fingerprint },
        },
        { keyId: o.owner.publicKey.fingerprint(), sign: (m) => o.owner!.sign(m) },
      )
    : undefined;
  const headers = [
    'host',
    host,
    ...lines.flatMap((a) => ['authorization', a]),
    ...(sig
      ? ['ocs-node', t.node.tls.fingerprint, 'signature-input', sig['signature-input'], 'signature', sig.signature]
      : []),
  ];
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code: string } }).error?.code;
        } catch {
          code = `not JSON: ${text.slice(0, 80)}`;
        }
        resolve({ status: res.statusCode ?? 0, code });
      });
    };
    const req = socket
      ? httpRequest({ socketPath: socket, method, path: o.path, headers }, onResponse)
      : httpsRequest(`${t.node.url}${o.path}`, { method, headers, ca: t.node.tls.cert }, onResponse);
    req.on('error', reject);
    req.end();
  });
}

async function reserve(owner: Ed25519PrivateKey, token: () => Promise<string>) {
  return t.client({ owner, token }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toOpenSsh('owner@e2e'),
    resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 32 * MiB },
    leaseSeconds: 600,
  });
}

test('a jwksUri issuer: its tokens work on the daemon and in a space process; a rotated key reaches the running process; a withdrawn kid is refused by both', async () => {
  const owner = generatePrivateKey();
  // The reservation itself, with the remote issuer's token (the daemon fetched k1 at start).
  const { space } = (await reserve(owner, () => remoteToken(k1, ['spaces']))).body;
  const status = `${space.apiBase}/status`;
  const viaDaemon = async (k: Signer) =>
    send({ path: status, authorization: `Bearer ${await remoteToken(k, ['monitor'])}`, owner });
  // Through the daemon into the space process, which has no network: k1 came in its config.
  assert.deepEqual(await viaDaemon(k1), { status: 200, code: undefined });
  const pid = t.node.supervisor.pidOf(space.id);
  assert.ok(pid);
  const socket = await t.node.supervisor.ensure(space.id);
  const direct = async (k: Signer, org = 'org-a') =>
    send({ path: status, authorization: `Bearer ${await remoteToken(k, ['monitor'], org)}`, owner }, socket);

  // Rotation: the issuer publishes k2 beside k1 and signs with k2.
  serve(k1, k2);
  await sleep(1100); // past the daemon's one-second cooldown
  assert.deepEqual(await viaDaemon(k2), { status: 200, code: undefined });
  assert.deepEqual(await direct(k2), { status: 200, code: undefined });
  assert.equal(t.node.supervisor.pidOf(space.id), pid, 'the same space process: no restart');

  // Withdrawal: k1 is gone from the set. Once the sets are due for refresh, a fresh k1 token is refused.
  serve(k2);
  await sleep(1100);
  const node = await send({ path: '/v1/node', authorization: `Bearer ${await remoteToken(k1, ['monitor'])}` });
  assert.deepEqual(node, { status: 401, code: 'token_key_unknown' });
  assert.deepEqual(await viaDaemon(k1), { status: 401, code: 'token_key_unknown' });
  // The space process itself, reached directly: it refreshed from the daemon and refuses k1 too.
  assert.deepEqual(await direct(k1), { status: 401, code: 'token_key_unknown' });
  assert.deepEqual(await direct(k2), { status: 200, code: undefined });
  assert.equal(t.node.supervisor.pidOf(space.id), pid);

  // Another org's token never passes the space process, even with the owner's signature.
  assert.deepEqual(await direct(k2, 'org-b'), { status: 404, code: 'not_found' });

  // The issuer goes down, then answers garbage: the last good set serves, unknown kids get a
  // stable 503, nothing crashes, nothing answers 500.
  await jwksDown();
  await sleep(1100);
  assert.deepEqual(await viaDaemon(k2), { status: 200, code: undefined });
  assert.deepEqual(await direct(k2), { status: 200, code: undefined });
  assert.deepEqual(await viaDaemon(k3), { status: 503, code: 'unavailable' });
  await jwksUp();
  served.body = '<html>upstream error</html>';
  await sleep(1100);
  assert.deepEqual(await viaDaemon(k2), { status: 200, code: undefined });
  assert.deepEqual(await viaDaemon(k3), { status: 503, code: 'unavailable' });
  assert.equal(t.node.supervisor.pidOf(space.id), pid, 'the space process never died over it');
  assert.ok(t.logs.some((l) => l.includes('issuer keys could not be fetched')));
  assert.ok(!t.logs.some((l) => l.includes('upstream error')), 'what the server sent is never logged');
  // Back to normal: a rotation after the outage is picked up again.
  serve(k2, k3);
  await sleep(1100);
  assert.deepEqual(await viaDaemon(k3), { status: 200, code: undefined });
  assert.deepEqual(await direct(k3), { status: 200, code: undefined });
});

test('two Authorization lines are refused on both APIs, whichever token comes first; a token of the wrong typ is refused', async () => {
  const owner = generatePrivateKey();
  const { space } = (await reserve(owner, () => t.token(['spaces']))).body;
  const status = `${space.apiBase}/status`;
  const mine = `Bearer ${await t.token(['monitor'])}`;
  const theirs = `Bearer ${await t.token(['monitor', 'farmer'], { org: 'org-b' })}`;
  const socket = await t.node.supervisor.ensure(space.id);
  for (const lines of [
    [mine, theirs],
    [theirs, mine],
    [mine, mine],
  ]) {
    assert.deepEqual(await send({ path: '/v1/node', authorization: lines }), { status: 400, code: 'invalid_request' });
    assert.deepEqual(await send({ path: status, authorization: lines, owner }), {
      status: 400,
      code: 'invalid_request',
    });
    assert.deepEqual(await send({ path: status, authorization: lines, owner }, socket), {
      status: 400,
      code: 'invalid_request',
    });
  }
  assert.deepEqual(await send({ path: status, authorization: mine, owner }), { status: 200, code: undefined });
  // An ID-token-typed JWT from the same issuer and key is not an access token here.
  const idToken = await mintToken({
    privateKey: createPrivateKey(readFileSync(join(t.config.stateDir, 'keys', 'dev-issuer.pem'), 'utf8')),
    kid: t.node.devIssuer!.kid,
    alg: 'EdDSA',
    issuer: t.node.devIssuer!.issuer,
    audience: t.node.nodeId,
    subject: 'tester',
    org: 'org-a',
    roles: ['monitor'],
    typ: 'JWT',
  });
  assert.deepEqual(await send({ path: '/v1/node', authorization: `Bearer ${idToken}` }), {
    status: 401,
    code: 'token_type_invalid',
  });
  assert.deepEqual(await send({ path: status, authorization: `Bearer ${idToken}`, owner }, socket), {
    status: 401,
    code: 'token_type_invalid',
  });
});

test('a config file must set auth.devIssuer; a dev issuer off loopback warns in the log and the banner at every start', async () => {
  const home = daemonDir('cfg');
  const config = {
    ...home.base,
    listen: { host: '0.0.0.0', port: 0 },
    capacity: { storageBytes: 256 * MiB },
    // Checked against this host's accounts, never recorded in its /etc/subuid.
    spaces: { reserveIds: false },
    workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
    log: { level: 'info' },
  };
  const write = (c: unknown) => home.write(c, `config-${randomBytes(3).toString('hex')}.json`);
  /** Starts ocs-node, waits for the banner (or the exit), stops it: what it printed, and its exit code. */
  const run = (path: string) =>
    new Promise<{ out: string; err: string; code: number | null }>((resolve, reject) => {
      const child = spawn(process.execPath, [MAIN, 'start', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no banner in 30 s: ${out} ${err}`));
      }, 30_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        // The banner is one write, ending in a newline.
        if (/url:\s+\S+/.test(out) && out.endsWith('\n')) child.kill('SIGTERM');
      });
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ out, err, code });
      });
    });
  try {
    const missing = await run(write(config));
    assert.equal(missing.code, 1);
    assert.match(missing.err, /configuration \/auth\/devIssuer: must be set in a config file/);

    for (let start = 0; start < 2; start++) {
      const r = await run(write({ ...config, auth: { devIssuer: true } }));
      assert.match(r.out, /WARNING: +the development issuer is on and the node listens on 0\.0\.0\.0/, r.out);
      const warned = r.err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .filter((l) => l.level === 40 && l.msg.includes('development issuer'));
      assert.equal(warned.length, 1, `start ${start}: ${r.err}`);
    }
    const quiet = await run(write({ ...config, listen: { host: '127.0.0.1', port: 0 }, auth: { devIssuer: true } }));
    assert.doesNotMatch(quiet.out, /WARNING: +the development issuer/);
    assert.match(quiet.out, /dev issuer:/);
    // The banner names the cipher's implementation, and warns exactly when it is not accelerated.
    const cipher = cipherImplementation();
    assert.match(quiet.out, /cipher: +xts\(aes\) by \S/);
    assert.equal(/WARNING: +space data is encrypted by/.test(quiet.out), !cipher.accelerated, quiet.out);
  } finally {
    await home.remove();
  }
});
