import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CreateContainerRequest,
  CreateSpaceRequest,
  NAMED_SCHEMAS,
  NODE_ROUTES,
  OcsError,
  SPACE_ROUTES,
  SpaceId,
  isSpaceId,
  nodeRoute,
  precompile,
  refusalsOf,
  spaceRoute,
  validate,
  validateHeaders,
  validateQuery,
  type RouteSpec,
} from '@ocs/protocol';

const good = {
  ownerKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXp8c1mO2zZ2V7u7gWw4o3m8cN5YlH7j9Q2s1m0aBcd owner@laptop',
  resources: { cpuMillicores: 500, memoryBytes: 268435456, storageBytes: 1073741824 },
  leaseSeconds: 3600,
};

function refusal(fn: () => unknown): OcsError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof OcsError);
    return e;
  }
  assert.fail('expected invalid_request');
}

test('every schema in the catalogue compiles under ajv strict mode', () => {
  precompile(Object.values(NAMED_SCHEMAS));
  assert.ok(Object.keys(NAMED_SCHEMAS).length > 20);
});

test('route ids are unique and every body route has a schema', () => {
  const ids = [...NODE_ROUTES, ...SPACE_ROUTES].map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length);
  for (const r of [...NODE_ROUTES, ...SPACE_ROUTES]) {
    if (r.method === 'POST') assert.ok('body' in r && r.body, `${r.id} has no body schema`);
  }
});

test('a valid create-space body passes and is typed', () => {
  const v = validate(CreateSpaceRequest, structuredClone(good));
  assert.equal(v.resources.cpuMillicores, 500);
});

test('bad bodies are refused with invalid_request naming the field, never echoing the value', () => {
  const secret = 'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ';
  const cases: [string, unknown, string][] = [
    ['unknown field', { ...good, isAdmin: true }, '/'],
    ['secret in unknown field', { ...good, [secret]: 1 }, '/'],
    ['negative cpu', { ...good, resources: { ...good.resources, cpuMillicores: -1 } }, '/resources/cpuMillicores'],
    ['float memory', { ...good, resources: { ...good.resources, memoryBytes: 1.5 } }, '/resources/memoryBytes'],
    ['string storage', { ...good, resources: { ...good.resources, storageBytes: '1' } }, '/resources/storageBytes'],
    ['missing lease', { ownerKey: good.ownerKey, resources: good.resources }, '/'],
    ['short lease', { ...good, leaseSeconds: 1 }, '/leaseSeconds'],
    ['not an object', 'hello', '/'],
    ['null', null, '/'],
    ['array', [good], '/'],
    ['extra resource', { ...good, resources: { ...good.resources, gpus: 1 } }, '/resources'],
  ];
  for (const [what, body, field] of cases) {
    const e = refusal(() => validate(CreateSpaceRequest, body));
    assert.equal(e.code, 'invalid_request', what);
    assert.equal(e.details?.field, field, what);
    assert.ok(!JSON.stringify(e.toBody()).includes(secret), `${what}: refusal echoes the value`);
  }
});

test('container requests cannot smuggle privileges', () => {
  const base = { name: 'web', image: 'busybox', cpuMillicores: 100, memoryBytes: 33554432 };
  validate(CreateContainerRequest, base);
  for (const [what, extra] of [
    ['privileged', { privileged: true }],
    ['SYS_ADMIN', { capAdd: ['SYS_ADMIN'] }],
    ['NET_ADMIN', { capAdd: ['NET_ADMIN'] }],
    ['host network', { networkMode: 'host' }],
    ['relative mount target', { mounts: [{ volume: 'data', target: 'etc' }] }],
    ['host path volume', { mounts: [{ volume: '/etc', target: '/x' }] }],
    ['bind source', { mounts: [{ volume: 'data', target: '/x', source: '/' }] }],
    ['upper-case name', { name: 'Web' }],
    ['path in name', { name: '../x' }],
  ] as const) {
    assert.equal(refusal(() => validate(CreateContainerRequest, { ...base, ...extra })).code, 'invalid_request', what);
  }
});

test('every {param} of a path has a schema, and no schema names a parameter the path lacks', () => {
  for (const r of [...NODE_ROUTES, ...SPACE_ROUTES] as readonly RouteSpec[]) {
    const inPath = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
    assert.deepEqual(Object.keys(r.params?.properties ?? {}).sort(), inPath, r.id);
  }
});

test('query parameters: integers converted, each given once, unknown ones and stray ones refused', () => {
  const q = spaceRoute('containerLogs').query;
  assert.deepEqual(validateQuery(q, { tail: '25' }), { tail: 25 });
  assert.deepEqual(validateQuery(q, {}), {});
  for (const bad of [
    { tail: '0' },
    { tail: '10001' },
    { tail: '1e3' },
    { tail: '-1' },
    { tail: ['1', '2'] },
    { x: '1' },
  ])
    assert.equal(refusal(() => validateQuery(q, bad)).code, 'invalid_request', JSON.stringify(bad));
  // A route without a query schema takes none.
  assert.match(refusal(() => validateQuery(undefined, { tail: '1' })).message, /no query parameters/);
  assert.deepEqual(validateQuery(undefined, {}), {});
});

test('declared headers are checked, the rest pass', () => {
  const h = nodeRoute('createSpace').headers;
  assert.deepEqual(validateHeaders(h, { 'idempotency-key': 'k'.repeat(16), accept: 'x' }), {
    'idempotency-key': 'k'.repeat(16),
  });
  assert.equal(refusal(() => validateHeaders(h, { 'idempotency-key': 'short' })).code, 'invalid_request');
  assert.equal(
    refusal(() => validateHeaders(h, { 'idempotency-key': ['a'.repeat(16), 'b'.repeat(16)] })).code,
    'invalid_request',
  );
});

test('refusals per route: token codes where a token is needed, signature codes where a signature is', () => {
  const health = refusalsOf(nodeRoute('health'), 'node');
  assert.ok(!health.includes('token_missing') && !health.includes('signature_missing'));
  const lock = refusalsOf(nodeRoute('lockSpace'), 'node');
  for (const c of ['token_expired', 'signature_invalid', 'replayed', 'not_owner', 'space_locked'] as const)
    assert.ok(lock.includes(c), c);
  assert.ok(refusalsOf(spaceRoute('createContainer'), 'space').includes('budget_exceeded'));
  assert.ok(refusalsOf(spaceRoute('listVms'), 'space').includes('space_locked'));
});

test('isSpaceId takes exactly the ids the SpaceId schema takes', () => {
  const cases: [unknown, boolean][] = [
    ['sp_abcdefghij234567abcd', true],
    ['sp_' + '0'.repeat(20), true],
    ['sp_abc', false],
    ['sp_' + 'a'.repeat(21), false],
    ['sp_ABCDEFGHIJ234567ABCD', false],
    ['vol_abcdefghij234567abc', false],
    ['sp_abcdefghij234567abc\n', false],
    [42, false],
    [undefined, false],
  ];
  const check = (id: string) => {
    try {
      validate(SpaceId, id);
      return true;
    } catch {
      return false;
    }
  };
  for (const [id, ok] of cases) {
    assert.equal(isSpaceId(id), ok, String(id));
    if (typeof id === 'string') assert.equal(check(id), ok, id);
  }
});
