import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DIGEST_ALGORITHMS, contentDigest, nobleHashes } from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';

test('the native hashes give the same digests as the pure-JS default, whole or in pieces', () => {
  const body = new Uint8Array(100_003).map((_, i) => (i * 31) & 0xff);
  for (const alg of DIGEST_ALGORITHMS) {
    assert.equal(contentDigest(body, alg, nativeHashes), contentDigest(body, alg, nobleHashes), alg);
    const h = nativeHashes(alg);
    for (let at = 0; at < body.length; at += 4096) h.update(body.subarray(at, at + 4096));
    const whole = nobleHashes(alg);
    whole.update(body);
    const d = h.digest();
    assert.ok(d instanceof Uint8Array && !Buffer.isBuffer(d), 'a plain Uint8Array');
    assert.deepEqual(d, whole.digest(), alg);
  }
});
