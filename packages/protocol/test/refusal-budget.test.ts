import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OVERFLOW_PRINCIPAL, RefusalBudget } from '@ocs/protocol';

test('refusal budget: a principal keeps perWindow entries, the rest is counted and summarized once', () => {
  const b = new RefusalBudget({ perWindow: 3, windowMs: 1000 });
  const kept = [];
  for (let i = 0; i < 10; i++) {
    const { record, due } = b.admit('tok:mallory', 'mallory', i % 2 ? 'not_found' : 'role_missing', 5);
    assert.deepEqual(due, []);
    kept.push(record);
  }
  assert.deepEqual(kept, [true, true, true, false, false, false, false, false, false, false]);
  // Another principal is not charged for mallory's refusals.
  assert.equal(b.admit('tok:alice', 'alice', 'not_found', 6).record, true);
  // The window ends: the next refusal (anyone's) brings the summary, and mallory starts afresh.
  const next = b.admit('tok:mallory', 'mallory', 'not_found', 1005);
  assert.equal(next.record, true);
  assert.deepEqual(next.due, [
    {
      principal: 'tok:mallory',
      actor: 'mallory',
      dropped: 7,
      codes: { not_found: 4, role_missing: 3 },
      from: 5,
      until: 1005,
    },
  ]);
  // Each summary is handed out once.
  assert.deepEqual(b.drain(5000), []);
});

test('refusal budget: drain(all) at shutdown summarizes windows that have not ended', () => {
  const b = new RefusalBudget({ perWindow: 1, windowMs: 60_000 });
  b.admit('p', 'p', 'replayed', 0);
  b.admit('p', 'p', 'replayed', 1);
  b.admit('q', 'q', 'replayed', 1);
  assert.deepEqual(b.drain(10), []);
  assert.deepEqual(b.drain(10, true), [
    { principal: 'p', actor: 'p', dropped: 1, codes: { replayed: 1 }, from: 0, until: 10 },
  ]);
});

test('refusal budget: principals beyond maxPrincipals share one overflow window', () => {
  const b = new RefusalBudget({ perWindow: 5, windowMs: 1000, maxPrincipals: 2 });
  assert.equal(b.admit('a', 'a', 'not_found', 0).record, true);
  assert.equal(b.admit('b', 'b', 'not_found', 0).record, true);
  for (let i = 0; i < 50; i++) assert.equal(b.admit(`c${i}`, `c${i}`, 'not_found', 1).record, false);
  const [overflow] = b.drain(2, true).filter((s) => s.principal === OVERFLOW_PRINCIPAL);
  assert.equal(overflow?.dropped, 50);
});
