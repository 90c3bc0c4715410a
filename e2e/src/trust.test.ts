/**
 * The trust core against a real node: who may do what on every route of both APIs, leases that
 * nobody but the owner (or the farmer) can touch, requests signed for another node, smuggled
 * requests through the forwarder, racing deletes, and the parser's own refusals.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { createServer, request } from 'node:http';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NODE_ROUTES,
  SPACE_ROUTES,
  generatePrivateKey,
  type CreateSpaceResponse,
  type Ed25519PrivateKey,
  type Role,
  type RouteSpec,
  type Space,
} from '@ocs/protocol';
import { spaceRunDir } from '@ocs/node-daemon';
import { startTestNode, MiB, type TestNode } from './harness.js';

let t: TestNode;
before(async () => {
  t = await startTestNode({ workloads: true });
});
after(async () => {
  await t?.stop();
});

const resources = { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 64 * MiB, pids: 128 };
const ownerA = generatePrivateKey();
const ownerB = generatePrivateKey();
const codeOf = (r: { body: unknown }) => (r.body as { error?: { code?: string } }).error?.code;

async function reserve(owner: Ed25519PrivateKey, org: string, leaseSeconds = 3600): Promise<CreateSpaceResponse> {
  const r = await t.client({ roles: ['spaces'], org, owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources,
    leaseSeconds,
  });
  return r.body;
}

// ---- the authorization matrix -------------------------------------------------------------------

interface Principal {
  name: string;
  org?: string;
  roles: Role[];
  key?: Ed25519PrivateKey;
}

const ALL: Role[] = ['spaces', 'storage', 'containers', 'vms', 'monitor'];
const subsets = <T>(xs: readonly T[]): T[][] =>
  xs.reduce<T[][]>((acc, x) => [...acc, ...acc.map((s) => [...s, x])], [[]]);

const PRINCIPALS: Principal[] = [
  { name: 'owner A', org: 'org-a', roles: ALL, key: ownerA },
  { name: 'owner A, monitor only', org: 'org-a', roles: ['monitor'], key: ownerA },
  { name: 'owner A, storage only', org: 'org-a', roles: ['storage'], key: ownerA },
  { name: 'owner B (own org)', org: 'org-b', roles: ALL, key: ownerB },
  { name: 'same org, no signature', org: 'org-a', roles: ALL },
  { name: "same org, B's key", org: 'org-a', roles: ALL, key: ownerB },
  ...subsets(ALL).map((roles) => ({ name: `other org [${roles.join(',')}]`, org: 'org-b', roles, key: ownerB })),
  { name: 'farmer', org: 'farm', roles: ['farmer'] },
  { name: 'monitor', org: 'mon', roles: ['monitor'] },
  { name: 'no token', roles: [] },
];

/** What the owner's own request gets, with placeholder ids and bodies: past every check of who it is. */
const OWNER_OUTCOME: Record<string, number> = {
  metrics: 200,
  getNode: 200,
  listSpaces: 200,
  getSpace: 200,
  renewSpace: 200,
  lockSpace: 200,
  unlockSpace: 409, // space_unlocked: it is open already
  rotateSpaceKey: 400, // unwrap_failed: the placeholder is no sealed key
  exportSpace: 409, // space_unlocked: an archive is taken of a locked space only
  moveSpace: 400, // invalid_request: the placeholder names no target
  delegateSpace: 400, // invalid_request: the placeholder carries no delegation
  revokeDelegation: 204, // there is none: nothing to forget
  drainNode: 400, // invalid_request: the placeholder's grace is negative (a drain would empty the node)
  getDrain: 404, // not_found: this node was never drained
  cancelDrain: 404,
  deleteSpace: 204,
  listAudit: 200,
  spaceStatus: 200,
  createVolume: 400,
  listVolumes: 200,
  deleteVolume: 404,
  loadImage: 400,
  listImages: 200,
  deleteImage: 404,
  uploadFile: 201,
  listFiles: 200,
  deleteFile: 404,
  createContainer: 400,
  listContainers: 200,
  getContainer: 404,
  startContainer: 404,
  stopContainer: 404,
  deleteContainer: 404,
  containerLogs: 404,
  containerStats: 404,
  createVm: 400,
  listVms: 200,
  getVm: 404,
  startVm: 404,
  stopVm: 404,
  deleteVm: 404,
  vmConsole: 404,
  getNetwork: 200,
  setEgress: 400, // the placeholder body is no egress
  publishPort: 400,
  unpublishPort: 400, // the placeholder is no port number
};
const DESTRUCTIVE = new Set(['lockSpace', 'deleteSpace']);
const has = (p: Principal, roles: readonly Role[]) => roles.some((r) => p.roles.includes(r));

/** The policy, cell by cell: the status `p` gets on `route` against space A (org-a, owner A). */
function expected(api: 'node' | 'space', route: RouteSpec, p: Principal): number {
  // A move's node-to-node steps take no token: space A is no import, whoever asks.
  if (route.signature === 'import-source') return 404;
  // A drain's import takes no token either; the placeholder names no space: invalid_request
  // for whoever asks, before the peer's signature (its refusals: drain.test.ts).
  if (route.signature === 'peer-node') return 400;
  if (route.roles.length === 0) return 200; // health
  if (p.org === undefined) return 401;
  if (p.roles.length === 0) return 401; // token_claims_invalid: a token must carry a role
  if (api === 'space') {
    if (!has(p, ['storage', 'containers', 'vms', 'monitor'])) return 403; // the daemon's role gate
    if (p.org !== 'org-a') return 404; // another org's space does not exist for it
    if (!has(p, route.roles)) return 403;
    if (!p.key) return 401;
    return p.key === ownerA ? OWNER_OUTCOME[route.id]! : 403;
  }
  if (!has(p, route.roles)) return 403;
  switch (route.signature) {
    case 'none':
      if (route.id === 'getSpace' && p.org !== 'org-a' && !has(p, ['farmer', 'monitor'])) return 404;
      return OWNER_OUTCOME[route.id]!;
    case 'owner':
    case 'owner-or-farmer':
    case 'owner-or-delegate':
      // Writes: the owner's org, or the farmer. Global read (monitor) grants no write.
      if (p.org !== 'org-a' && !p.roles.includes('farmer')) return 404;
      if (route.signature === 'owner-or-farmer' && p.roles.includes('farmer') && !p.key)
        return OWNER_OUTCOME[route.id]!;
      if (!p.key) return 401;
      return p.key === ownerA ? OWNER_OUTCOME[route.id]! : 403;
    case 'bound-key':
      // A restore makes a new space in the caller's own org, whoever it is; the placeholder is
      // no archive (and names no lease): 400 for every caller the role lets in. Its signature
      // and archive checks have tests of their own (restore.test.ts), as createSpace's have.
      if (route.id === 'restoreSpace') return 400;
      // An import's placeholder body names no space: invalid_request, before any signature.
      if (route.id === 'openImport') return 400;
      throw new Error(`no rule for ${route.id} (createSpace has tests of its own)`);
  }
}

function placeholderBody(route: RouteSpec): { json?: unknown; raw?: Uint8Array } {
  if (route.body === 'binary') return { raw: new TextEncoder().encode('not an image') };
  if (route.body === undefined) return {};
  if (route.id === 'renewSpace') return { json: { leaseSeconds: 7200 } };
  if (route.id === 'drainNode') return { json: { graceSeconds: -1 } };
  if (route.id === 'unlockSpace' || route.id === 'rotateSpaceKey') return { json: { sealedKey: 'AAAA' } };
  return { json: {} };
}

async function send(p: Principal, method: string, path: string, body: { json?: unknown; raw?: Uint8Array }) {
  const c = t.client({
    roles: p.roles,
    ...(p.org ? { org: p.org } : {}),
    ...(p.key ? { owner: p.key } : {}),
    ...(p.org ? {} : { token: async () => '' }),
  });
  return c.send(method, path, body.json, body.raw ? { raw: body.raw } : {});
}

test('every route of both APIs × every principal gets the status the policy says', { timeout: 600_000 }, async () => {
  const a = await reserve(ownerA, 'org-a');
  await reserve(ownerB, 'org-b');
  const failures: string[] = [];
  let cells = 0;
  const routes = [
    ...(NODE_ROUTES as readonly RouteSpec[]).filter((r) => r.id !== 'createSpace').map((r) => ['node', r] as const),
    ...(SPACE_ROUTES as readonly RouteSpec[]).map((r) => ['space', r] as const),
  ];
  for (const [api, route] of routes) {
    for (const p of PRINCIPALS) {
      const want = expected(api, route, p);
      // A success that locks or destroys gets a space of its own, so the other cells keep theirs.
      const target = DESTRUCTIVE.has(route.id) && want < 300 ? (await reserve(ownerA, 'org-a')).space : a.space;
      const params = route.path
        .replace('{spaceId}', target.id)
        .replace('{file}', route.id === 'uploadFile' ? `matrix-${cells}` : 'nope')
        .replace(/\{\w+\}/g, 'nope');
      const path = api === 'node' ? params : `${target.apiBase}${params}`;
      const r = await send(p, route.method, path, placeholderBody(route));
      cells++;
      if (r.status !== want)
        failures.push(`${route.method} ${route.path} as ${p.name}: ${r.status} ${codeOf(r) ?? ''}, want ${want}`);
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cells} cells differ`);
});

// ---- leases ------------------------------------------------------------------------------------

test('a renew never moves the expiry earlier, and needs the owner or the farmer', async () => {
  const a = await reserve(ownerA, 'org-a', 3600);
  const before = Date.parse(a.space.lease.expiresAt);
  const short = await t
    .client({ roles: ['spaces'], org: 'org-a', owner: ownerA })
    .call<Space>('POST', `/v1/spaces/${a.space.id}/renew`, { leaseSeconds: 60 });
  assert.equal(Date.parse(short.body.lease.expiresAt), before, 'a shorter renew keeps the lease');
  const unsigned = await t.client({ roles: ['spaces'], org: 'org-a' }).send('POST', `/v1/spaces/${a.space.id}/renew`, {
    leaseSeconds: 60,
  });
  assert.equal(codeOf(unsigned), 'signature_missing');
  const monitor = await t
    .client({ roles: ['spaces', 'monitor'], org: 'org-b', owner: ownerB })
    .send('POST', `/v1/spaces/${a.space.id}/renew`, { leaseSeconds: 60 });
  assert.equal(codeOf(monitor), 'not_found');
  const longer = await t
    .client({ roles: ['farmer'], org: 'farm' })
    .call<Space>('POST', `/v1/spaces/${a.space.id}/renew`, { leaseSeconds: 7200 });
  assert.ok(Date.parse(longer.body.lease.expiresAt) > before, 'the farmer extends');
});

// ---- authority ---------------------------------------------------------------------------------

/** One request, signed by `owner` for `url` (whatever node that names), to send to this node as it is. */
const signedFor = (owner: Ed25519PrivateKey, method: string, url: string, roles: Role[], json?: unknown) =>
  t.captureSigned(owner, method, url, roles, json);

/** Raw bytes over TLS to this node; resolves with everything it answered before closing. */
function rawTls(bytes: string | Buffer, waitMs = 3000): Promise<string> {
  const port = Number(new URL(t.node.url).port);
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca: t.node.tls.cert, servername: 'localhost' }, () => s.write(bytes));
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    const done = () => resolve(Buffer.concat(chunks).toString('latin1'));
    s.on('close', done);
    setTimeout(() => s.destroy(), waitMs).unref();
  });
}

const headerText = (h: Record<string, string>) =>
  Object.entries(h)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
// Responses follow each other's bodies directly, so a status line need not start a line.
const statuses = (raw: string) => [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

test('a request signed for another node is refused on both APIs (misdirected_request)', async () => {
  const a = await reserve(ownerA, 'org-a');
  const port = new URL(t.node.url).port;
  // Valid for "node-b": right key, right token audience (this cluster), its own nonce.
  for (const path of [`/v1/spaces/${a.space.id}/lock`, `${a.space.apiBase}/status`]) {
    const method = path.endsWith('/lock') ? 'POST' : 'GET';
    const { headers, body } = await signedFor(
      ownerA,
      method,
      `https://node-b.example:${port}${path}`,
      ALL,
      method === 'POST' ? {} : undefined,
    );
    const raw = await rawTls(
      `${method} ${path} HTTP/1.1\r\n${headerText(headers)}connection: close\r\n\r\n${body ? Buffer.from(body).toString() : ''}`,
    );
    assert.equal(statuses(raw)[0], 421, raw.slice(0, 200));
    assert.match(raw, /"code":"misdirected_request"/);
  }
  assert.equal(
    (await t.client({ roles: ['spaces'] }).call<Space>('GET', `/v1/spaces/${a.space.id}`)).body.state,
    'active',
  );
  // The space process checks it too, for anything that reaches its socket without the daemon.
  const socket = spaceRunDir(t.config.runDir, a.space.id).handedApiSocket;
  await t.client({ roles: ['monitor'], owner: ownerA }).call('GET', `${a.space.apiBase}/status`);
  const direct = await new Promise<number>((resolve, reject) => {
    const req = request(
      { socketPath: socket, path: `${a.space.apiBase}/status`, headers: { host: `node-b.example:${port}` } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end();
  });
  assert.equal(direct, 421);
});

// ---- smuggling ---------------------------------------------------------------------------------

test(
  'the forwarder passes one framed request: no smuggled request reaches the space process',
  { timeout: 120_000 },
  async () => {
    const a = await reserve(ownerA, 'org-a');
    const owner = t.client({ roles: ALL, org: 'org-a', owner: ownerA });
    await owner.call('POST', `${a.space.apiBase}/volumes`, { name: 'zz', sizeBytes: 16 * MiB });
    const volumes = async () =>
      (await owner.call<{ volumes: { name: string }[] }>('GET', `${a.space.apiBase}/volumes`)).body.volumes.map(
        (v) => v.name,
      );
    const base = t.node.url;
    const smuggled = async () => {
      const del = await signedFor(ownerA, 'DELETE', `${base}${a.space.apiBase}/volumes/zz`, ALL);
      return `DELETE ${a.space.apiBase}/volumes/zz HTTP/1.1\r\n${headerText(del.headers)}\r\n`;
    };
    const status = async () => (await signedFor(ownerA, 'GET', `${base}${a.space.apiBase}/status`, ALL)).headers;
    const line = `GET ${a.space.apiBase}/status HTTP/1.1\r\n`;
    const shapes: [string, () => Promise<string>][] = [
      [
        'chunked body on a GET',
        async () => {
          const inner = await smuggled();
          return `${line}${headerText(await status())}transfer-encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
        },
      ],
      [
        'content-length body on a GET',
        async () => {
          const inner = await smuggled();
          return `${line}${headerText(await status())}content-length: ${inner.length}\r\n\r\n${inner}`;
        },
      ],
      [
        'content-length and transfer-encoding',
        async () => {
          const inner = await smuggled();
          return `${line}${headerText(await status())}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
        },
      ],
      [
        'two content-lengths',
        async () => {
          const inner = await smuggled();
          return `${line}${headerText(await status())}content-length: 0\r\ncontent-length: ${inner.length}\r\n\r\n${inner}`;
        },
      ],
    ];
    for (const [name, make] of shapes) {
      const raw = await rawTls(await make());
      const got = statuses(raw);
      assert.ok(got.length >= 1 && got.every((s) => s >= 400 && s < 500), `${name}: answered ${got.join(',')}`);
      assert.deepEqual(await volumes(), ['zz'], `${name}: the smuggled DELETE never ran`);
    }
    // A pipelined second request is a request of its own: the daemon checks it (here: no signature).
    const unsigned = `DELETE ${a.space.apiBase}/volumes/zz HTTP/1.1\r\nhost: ${new URL(base).host}\r\nauthorization: Bearer ${await t.token(ALL)}\r\nconnection: close\r\n\r\n`;
    const raw = await rawTls(`${line}${headerText(await status())}\r\n${unsigned}`);
    assert.deepEqual(statuses(raw), [200, 401], raw);
    assert.deepEqual(await volumes(), ['zz']);
  },
);

// ---- races and the parser -----------------------------------------------------------------------

test('deletes of one space race: one wins, the others are 4xx', async () => {
  const a = await reserve(ownerA, 'org-a');
  const c = t.client({ roles: ['spaces'], org: 'org-a', owner: ownerA });
  // Four at once widen the window in which a second teardown used to start under the first.
  const rs = await Promise.all([0, 1, 2, 3].map(() => c.send('DELETE', `/v1/spaces/${a.space.id}`)));
  const got = rs.map((r) => r.status).sort();
  assert.equal(got[0], 204, JSON.stringify(rs.map((r) => r.body)));
  for (const s of got.slice(1))
    assert.ok(s >= 400 && s < 500, `a loser got ${s}: ${JSON.stringify(rs.map((r) => r.body))}`);
  assert.equal((await c.send('GET', `/v1/spaces/${a.space.id}`)).status, 404);
});

test("Node's parser refusals answer with the JSON error body", async () => {
  const host = new URL(t.node.url).host;
  const cases: [string, string, number, string][] = [
    [
      'oversized headers',
      `GET /v1/node HTTP/1.1\r\nhost: ${host}\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`,
      431,
      'headers_too_large',
    ],
    ['no Host', 'GET /v1/node HTTP/1.1\r\n\r\n', 400, 'invalid_request'],
    ['raw UTF-8 path', `GET /v1/spaces/\u00e9t\u00e9 HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 400, 'invalid_request'],
  ];
  for (const [name, bytes, status, code] of cases) {
    const raw = await rawTls(Buffer.from(bytes, 'utf8'));
    assert.equal(statuses(raw)[0], status, `${name}: ${raw.slice(0, 120)}`);
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    assert.equal((JSON.parse(body) as { error?: { code: string } }).error?.code, code, `${name}: ${raw}`);
  }
});

test("a link the space plants where its API socket was never redirects the daemon's requests", async () => {
  const a = await reserve(ownerA, 'org-a');
  const owner = t.client({ roles: ALL, org: 'org-a', owner: ownerA });
  await owner.call('GET', `${a.space.apiBase}/status`);
  // The decoy: a socket the tenant would like the daemon (root) to talk to instead.
  const dir = mkdtempSync(join(tmpdir(), 'ocs-decoy-'));
  let decoyHits = 0;
  const decoy = createServer((_req, res) => {
    decoyHits++;
    res.end('{}');
  });
  await new Promise<void>((resolve) => decoy.listen(join(dir, 'decoy.sock'), resolve));
  try {
    const planted = spaceRunDir(t.config.runDir, a.space.id).apiSocket;
    rmSync(planted, { force: true });
    symlinkSync(join(dir, 'decoy.sock'), planted);
    const r = await owner.call<{ spaceId: string }>('GET', `${a.space.apiBase}/status`);
    assert.equal(r.body.spaceId, a.space.id, 'answered by the space process itself');
    assert.equal(decoyHits, 0);
  } finally {
    await new Promise<void>((resolve) => decoy.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
});
