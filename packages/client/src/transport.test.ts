/**
 * The SDK's request layer against real TLS servers on loopback: pinning before any byte is
 * written, connection reuse, which failures are retried (and which never are), streamed uploads.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BaseClient, PinMismatchError } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'ocs-client-'));
let key = '';
let cert = '';
let fingerprint = '';

after(() => rmSync(dir, { recursive: true, force: true }));

/** A server on loopback; `handle` sees each request with its per-connection index (1, 2, …). */
async function serve(
  t: { after: (fn: () => Promise<void> | void) => void },
  handle: (req: IncomingMessage, res: ServerResponse, nth: number, body: Buffer) => void,
): Promise<{ url: string; requests: { method: string; headers: IncomingMessage['headers']; body: Buffer }[] }> {
  if (!key) {
    execFileSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ed25519',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=node.test',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ]);
    key = readFileSync(join(dir, 'key.pem'), 'utf8');
    cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    fingerprint = new X509Certificate(cert).fingerprint256;
  }
  const requests: { method: string; headers: IncomingMessage['headers']; body: Buffer }[] = [];
  const perSocket = new WeakMap<object, number>();
  const server: Server = createServer({ key, cert }, (req, res) => {
    const nth = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, nth);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method!, headers: req.headers, body });
      handle(req, res, nth, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  t.after(() => server.closeAllConnections());
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const ok = (res: ServerResponse) => {
  res.setHeader('content-type', 'application/json');
  res.end('{"ok":true}');
};

test('requests reuse one kept-alive connection', async (t) => {
  const s = await serve(t, (_req, res) => ok(res));
  const c = new BaseClient({ url: s.url, ca: cert });
  t.after(() => c.close());
  for (let i = 0; i < 20; i++) assert.deepEqual((await c.call('GET', '/x')).body, { ok: true });
  assert.equal(c.connections, 1);
  assert.equal(s.requests.length, 20);
});

test('a fingerprint pin alone is enough; a wrong one fails before a byte of the request is sent', async (t) => {
  const s = await serve(t, (_req, res) => ok(res));
  const pinned = new BaseClient({ url: s.url, fingerprint, token: () => 'secret-token' });
  t.after(() => pinned.close());
  assert.equal((await pinned.call('GET', '/x')).status, 200);
  const wrong = new BaseClient({
    url: s.url,
    fingerprint: fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00'),
    token: () => 'secret-token',
  });
  t.after(() => wrong.close());
  await assert.rejects(wrong.call('GET', '/y'), (e: unknown) => e instanceof PinMismatchError);
  // Never retried, and the server never saw it.
  assert.deepEqual(
    s.requests.map((r) => r.headers.authorization),
    ['Bearer secret-token'],
  );
  // With a CA, a pin that does not match is refused too.
  const both = new BaseClient({ url: s.url, ca: cert, fingerprint: '00'.repeat(32) });
  t.after(() => both.close());
  await assert.rejects(both.call('GET', '/z'), (e: unknown) => e instanceof PinMismatchError);
  assert.equal(s.requests.length, 1);
});

test('a request cut on a reused connection is sent again on a new one, even a POST', async (t) => {
  let cut = false;
  const s = await serve(t, (req, res, nth) => {
    if (nth === 2 && !cut) {
      cut = true;
      req.socket.destroy();
      return;
    }
    ok(res);
  });
  const c = new BaseClient({ url: s.url, ca: cert });
  t.after(() => c.close());
  await c.call('GET', '/first');
  assert.equal((await c.call('POST', '/second', { n: 1 })).status, 200);
  assert.equal(c.connections, 2);
  assert.deepEqual(
    s.requests.map((r) => r.method),
    ['GET', 'POST', 'POST'],
  );
});

test('on a fresh connection, only idempotent requests are sent again; others fail', async (t) => {
  let cuts = 0;
  const s = await serve(t, (req, res, nth) => {
    if (nth === 1 && cuts < 2) {
      cuts++;
      req.socket.destroy();
      return;
    }
    ok(res);
  });
  const plain = new BaseClient({ url: s.url, ca: cert });
  t.after(() => plain.close());
  await assert.rejects(plain.call('POST', '/create', { n: 1 }), /socket hang up|ECONNRESET/);
  assert.equal(s.requests.length, 1);

  const c = new BaseClient({ url: s.url, ca: cert });
  t.after(() => c.close());
  const headers = { 'idempotency-key': 'key-0123456789abcdef' };
  assert.equal((await c.call('POST', '/create', { n: 1 }, { idempotent: true, headers })).status, 200);
  const posts = s.requests.slice(1);
  assert.equal(posts.length, 2);
  assert.deepEqual(
    posts.map((r) => r.headers['idempotency-key']),
    [headers['idempotency-key'], headers['idempotency-key']],
  );
});

test('a file body streams with its digest and progress', async (t) => {
  const s = await serve(t, (_req, res) => ok(res));
  const file = join(dir, 'blob.bin');
  const data = Buffer.alloc(3 * 1024 * 1024, 7);
  writeFileSync(file, data);
  const c = new BaseClient({ url: s.url, ca: cert });
  t.after(() => c.close());
  const seen: [number, number][] = [];
  await c.call('POST', '/up', undefined, { file: { path: file }, onProgress: (a, b) => seen.push([a, b]) });
  const got = s.requests[0]!;
  assert.equal(got.body.length, data.length);
  assert.equal(got.headers['content-digest'], `sha-256=:${createHash('sha256').update(data).digest('base64')}:`);
  assert.equal(got.headers['content-length'], String(data.length));
  assert.ok(seen.length > 1, 'progress is reported as the body goes');
  assert.deepEqual(seen.at(-1), [data.length, data.length]);
});
