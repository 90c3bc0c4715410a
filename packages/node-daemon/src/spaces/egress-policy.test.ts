import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcsError } from '@ocs/protocol';
import { checkEgress, cidrContains, effectiveEgress, type NodeEgress } from './egress-policy.js';

const refused = (err: unknown) => err instanceof OcsError && err.code === 'egress_refused';

test('networks contain what lies inside them, not what overlaps', () => {
  assert.ok(cidrContains('203.0.113.0/24', '203.0.113.7'));
  assert.ok(cidrContains('203.0.113.0/24', '203.0.113.128/25'));
  assert.ok(cidrContains('0.0.0.0/0', '8.8.8.8'));
  assert.ok(!cidrContains('203.0.113.0/25', '203.0.113.0/24'));
  assert.ok(!cidrContains('203.0.113.0/24', '203.0.114.1'));
});

test("an owner's egress stays within the node's policy", () => {
  const all = { mode: 'all' } as const;
  const list = (...allow: string[]) => ({ mode: 'list' as const, allow });
  for (const node of ['none', 'all', { allow: ['203.0.113.0/24'] }] as NodeEgress[])
    checkEgress(node, { mode: 'none' });
  assert.throws(() => checkEgress('none', all), refused);
  assert.throws(() => checkEgress('none', list('203.0.113.1')), refused);
  checkEgress('all', all);
  checkEgress('all', list('198.51.100.0/24'));
  const node = { allow: ['203.0.113.0/24'] };
  assert.throws(() => checkEgress(node, all), refused);
  checkEgress(node, list('203.0.113.8/29'));
  assert.throws(() => checkEgress(node, list('203.0.113.8/29', '198.51.100.1')), refused);
  assert.throws(
    () => checkEgress('all', list('300.1.1.1')),
    (e: unknown) => e instanceof OcsError && e.code === 'invalid_request',
  );
});

test('a policy narrowed after the fact narrows what the firewall gets', () => {
  assert.deepEqual(effectiveEgress('none', { mode: 'all' }), { mode: 'none' });
  assert.deepEqual(effectiveEgress({ allow: ['203.0.113.0/24'] }, { mode: 'all' }), {
    mode: 'list',
    allow: ['203.0.113.0/24'],
  });
  assert.deepEqual(effectiveEgress({ allow: ['203.0.113.0/24'] }, { mode: 'list', allow: ['198.51.100.1'] }), {
    mode: 'none',
  });
  assert.deepEqual(effectiveEgress('all', { mode: 'list', allow: ['198.51.100.1'] }), {
    mode: 'list',
    allow: ['198.51.100.1'],
  });
});
