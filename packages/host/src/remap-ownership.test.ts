import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shiftedId } from './remap-ownership.js';

const shifts = [
  { from: 500_000, to: 500_007, count: 1 },
  { from: 1_000_000, to: 1_196_608, count: 65_536 },
];

test('an id moves to its place in the new range; ids outside every old range stay', () => {
  assert.equal(shiftedId(500_000, shifts), 500_007);
  assert.equal(shiftedId(1_000_000, shifts), 1_196_608);
  assert.equal(shiftedId(1_000_000 + 65_535, shifts), 1_196_608 + 65_535);
  assert.equal(shiftedId(1_000_000 + 65_536, shifts), undefined);
  assert.equal(shiftedId(0, shifts), undefined, "root's files (the node's directories) stay root's");
  assert.equal(shiftedId(500_001, shifts), undefined);
});

test('an id already in a new range is not moved again (a walk run twice after a crash)', () => {
  // Overlapping ranges: 1,000,000 + 65,536 … moved once lands in the new range and stays there.
  const overlapping = [{ from: 100, to: 150, count: 100 }];
  assert.equal(shiftedId(120, overlapping), 170);
  assert.equal(shiftedId(170, overlapping), undefined);
  assert.equal(shiftedId(110, overlapping), 160);
});
