import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOcsError } from '@ocs/protocol';
import { checkSpaceId, isSpaceId } from './space-id.js';

test('the drivers take sp_ and 1 to 40 lowercase letters or digits, nothing that means anything in a name', () => {
  for (const ok of ['sp_a', 'sp_fwtesta', 'sp_abcdefghij234567abcd', `sp_${'a'.repeat(40)}`]) {
    assert.ok(isSpaceId(ok), ok);
    checkSpaceId(ok);
  }
  for (const bad of ['sp_', 'sp_A', 'sp_a-b', 'sp_a.b', 'sp_a/b', 'sp_a\n', `sp_${'a'.repeat(41)}`, 'vm_a', 7, null]) {
    assert.equal(isSpaceId(bad), false, String(bad));
    assert.throws(
      () => checkSpaceId(bad),
      (e) => isOcsError(e) && e.code === 'invalid_request',
    );
  }
});
