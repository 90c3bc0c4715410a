import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CreateContainerRequest,
  CreateSpaceRequest,
  NAMED_SCHEMAS,
  NODE_ROUTES,
  OcsError,
  SPACE_ROUTES,
  precompile,
  validate,
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
