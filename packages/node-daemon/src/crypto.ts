/**
 * node:crypto's Ed25519 and SHA-2, several times faster than the pure-JS defaults of the protocol
 * package (see bench/verify). Public keys are imported once and cached.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { Ed25519Verifier, HashFactory } from '@ocs/protocol';

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

export const nodeHashes: HashFactory = (alg) => {
  const h = createHash(alg === 'sha-256' ? 'sha256' : 'sha512');
  return { update: (d) => h.update(d), digest: () => new Uint8Array(h.digest()) };
};
