import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SPACE_STATES } from '@ocs/protocol';
import { LIVE_STATES_SQL, isLive, isStanding } from './space-states.js';

test('live and standing spaces, state by state', () => {
  const table = {
    creating: [true, true],
    active: [true, true],
    locked: [true, true],
    expired: [true, true],
    destroying: [false, true],
    destroyed: [false, false],
    failed: [false, false],
    importing: [true, true],
    prepared: [true, true],
    moving: [true, true],
    committing: [true, true],
    locking: [true, true],
  } as const;
  assert.deepEqual(Object.keys(table), [...SPACE_STATES]);
  for (const s of SPACE_STATES) assert.deepEqual([isLive(s), isStanding(s)], table[s], s);
  assert.equal(
    LIVE_STATES_SQL,
    `('creating','active','locked','expired','importing','prepared','moving','committing','locking')`,
  );
});
