import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOcsError } from '@ocs/protocol';
import { assertId, assertKey, assertSize } from './types.js';

const invalid = (e: unknown) => isOcsError(e) && e.code === 'invalid_request';

test('ids: [a-z0-9_-], alphanumeric first, at most 64', () => {
  for (const ok of ['a', 'sp_abcdefghij234567abcd', '0-x', 'x'.repeat(64)]) assertId(ok);
  for (const bad of ['', '-x', '_x', 'A', 'a.b', 'a/b', '..', 'a b', 'a\nb', 'x'.repeat(65), 'ü', 7, null]) {
    assert.throws(() => assertId(bad), invalid, JSON.stringify(bad));
  }
});

test('sizes are whole bytes at or above the minimum; keys are exactly 32 bytes', () => {
  assertSize(16, 16);
  for (const bad of [15, 16.5, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '16'])
    assert.throws(() => assertSize(bad, 16), invalid);
  assertKey(new Uint8Array(32));
  for (const bad of [new Uint8Array(31), new Uint8Array(33), 'k'.repeat(32), [...new Uint8Array(32)]])
    assert.throws(() => assertKey(bad), invalid);
});
