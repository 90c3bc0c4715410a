/**
 * The pipeline both servers run, on a real Koa app over a real socket: framing, media types,
 * strict UTF-8, 404/405 and no-store answer the same whoever binds a catalogue.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import Koa from 'koa';
import Router from '@koa/router';
import { Type } from '@sinclair/typebox';
import type { RouteSpec } from '@ocs/protocol';
import { bindCatalogue, errorMiddleware, methodNotAllowed, parseJson, readBody } from './index.js';

const CATALOGUE = [
  { id: 'a', method: 'GET', path: '/things/{name}', summary: '', roles: [], signature: 'none', status: 200 },
  {
    id: 'b',
    method: 'POST',
    path: '/things/{name}',
    summary: '',
    roles: [],
    signature: 'none',
    body: Type.Object({ n: Type.Integer() }),
    status: 201,
  },
  { id: 'c', method: 'POST', path: '/uploads', summary: '', roles: [], signature: 'none', body: 'binary', status: 201 },
] as unknown as RouteSpec[];

async function serve(): Promise<{ url: string; close(): Promise<void>; refused: string[] }> {
  const refused: string[] = [];
  const router = new Router();
  bindCatalogue(router, CATALOGUE, async (spec, ctx) => {
    const raw = spec.body ? await readBody(ctx, 1024) : new Uint8Array();
    ctx.status = spec.status;
    ctx.body = { id: spec.id, ...(spec.body && spec.body !== 'binary' ? { got: parseJson(raw) } : {}) };
  });
  const app = new Koa();
  app.use(errorMiddleware({ error: () => undefined }, (_ctx, e) => void refused.push(e.code)));
  app.use(router.routes());
  app.use(methodNotAllowed(router));
  const server = createServer(app.callback());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    refused,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** One request by node:http, which (unlike fetch) sends a body on any method, as an attacker would. */
function call(url: string, method: string, body?: Uint8Array | string, type?: string) {
  return new Promise<{
    status: number;
    cache: string | undefined;
    body: { error?: { code: string } } & Record<string, unknown>;
  }>((resolve, reject) => {
    const bytes = body === undefined ? undefined : Buffer.from(body);
    const req = request(
      url,
      {
        method,
        headers: {
          ...(type ? { 'content-type': type } : {}),
          ...(bytes ? { 'content-length': String(bytes.length) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            cache: res.headers['cache-control'],
            body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code: string } },
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(bytes);
  });
}

test('one pipeline: each refusal has its code, every answer is no-store', async () => {
  const s = await serve();
  try {
    const ok = await call(`${s.url}/things/x`, 'POST', '{"n":1}', 'application/json; charset=utf-8');
    assert.equal(ok.status, 201);
    assert.deepEqual(ok.body, { id: 'b', got: { n: 1 } });
    assert.equal(ok.cache, 'no-store', 'a success is not cached either');
    const cases: [string, string, Uint8Array | string | undefined, string | undefined, number, string][] = [
      ['a path under another method', 'DELETE', undefined, undefined, 405, 'method_not_allowed'],
      ['an unknown path', 'GET', undefined, undefined, 404, 'not_found'],
      ['JSON sent as text', 'POST', '{"n":1}', 'text/plain', 415, 'unsupported_media_type'],
      ['JSON without a type', 'POST', '{"n":1}', undefined, 415, 'unsupported_media_type'],
      ['JSON in another charset', 'POST', '{"n":1}', 'application/json; charset=latin1', 415, 'unsupported_media_type'],
      // 0xff is never UTF-8: refused, not decoded to U+FFFD.
      [
        'invalid UTF-8',
        'POST',
        new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
        'application/json',
        400,
        'invalid_request',
      ],
      ['a body on a GET', 'GET', 'x', 'application/json', 400, 'invalid_request'],
      ['an upload sent as a form', 'POST', 'a=b', 'application/x-www-form-urlencoded', 415, 'unsupported_media_type'],
      ['a body over the limit', 'POST', `{"n":${'1'.repeat(2000)}}`, 'application/json', 413, 'body_too_large'],
    ];
    for (const [what, method, body, type, status, code] of cases) {
      const path = what.startsWith('an upload') ? '/uploads' : what === 'an unknown path' ? '/nothing' : '/things/x';
      const r = await call(`${s.url}${path}`, method, body, type);
      assert.equal(r.status, status, what);
      assert.equal(r.body.error?.code, code, what);
      assert.equal(r.cache, 'no-store', what);
    }
    assert.equal(s.refused.length, cases.length, 'every refusal reached the hook');
    // An upload takes bytes with or without a type.
    assert.equal((await call(`${s.url}/uploads`, 'POST', new Uint8Array([1, 2, 3]))).status, 201);
    assert.equal((await call(`${s.url}/uploads`, 'POST', 'x', 'application/x-tar')).status, 201);
  } finally {
    await s.close();
  }
});

test('a JSON body dripped slower than the deadline ends its connection, refused as invalid_request', async () => {
  const refused: string[] = [];
  const router = new Router();
  bindCatalogue(router, CATALOGUE, async (spec, ctx) => {
    await readBody(ctx, 1024, 300);
    ctx.status = spec.status;
  });
  const app = new Koa();
  app.use(errorMiddleware({ error: () => undefined }, (_ctx, e) => void refused.push(e.code)));
  app.use(router.routes());
  const server = createServer(app.callback());
  // As the daemon runs: no whole-request deadline of Node's own.
  server.requestTimeout = 0;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1');
    socket.write(
      'POST /things/x HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"n":',
    );
    await new Promise<void>((resolve) => socket.once('close', () => resolve()).on('error', () => undefined));
    assert.ok(Date.now() - started < 5000, 'closed by the body deadline, not by the test');
    assert.deepEqual(refused, ['invalid_request']);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});
