import { test } from 'node:test';
import assert from 'node:assert/strict';
import { overlappingShifts, shiftedId } from './remap-ownership.js';

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

test('shifts whose old and new ids meet are found (a walk could not tell them apart); apart or identical ones are not', () => {
  assert.equal(overlappingShifts(shifts), undefined);
  // The same base on both nodes: every id stays or moves within a range nobody moves from.
  assert.equal(overlappingShifts([{ from: 200_001, to: 200_001, count: 1 }, ...shifts]), undefined);
  // A's space uid is B's QEMU uid for the space (bases 1000 apart, QEMU at uid + 1000).
  const clash = [
    { from: 906_001, to: 905_001, count: 1 },
    { from: 907_001, to: 906_001, count: 1 },
  ];
  assert.deepEqual(overlappingShifts(clash), [clash[0], clash[1]]);
  // One range onto itself, shifted: 150…199 are both old and new.
  assert.ok(overlappingShifts([{ from: 100, to: 150, count: 100 }]));
  // Touching is not overlapping.
  assert.equal(overlappingShifts([{ from: 100, to: 200, count: 100 }]), undefined);
});
