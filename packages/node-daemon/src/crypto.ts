/**
 * node:crypto's Ed25519 and SHA-2, several times faster than the pure-JS defaults of the protocol
 * package (see bench/verify). Public keys are imported once and cached.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { Ed25519Verifier } from '@ocs/protocol';

const cache = new Map<string, KeyObject>();
const CACHE_MAX = 10_000;

function keyObject(raw: Uint8Array): KeyObject {
  const x = Buffer.from(raw).toString('base64url');
  let k = cache.get(x);
  if (!k) {
    k = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(x, k);
  }
  return k;
}

export const nodeVerify: Ed25519Verifier = (signature, message, publicKey) => {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return verify(null, message, keyObject(publicKey), signature);
  } catch {
    return false;
  }
};

/** The native SHA-2, shared with the space process and the SDK (`@ocs/protocol/node`). */
export { nativeHashes as nodeHashes } from '@ocs/protocol/node';
