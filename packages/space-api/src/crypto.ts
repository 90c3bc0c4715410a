// node:crypto Ed25519 for the hot path (see bench/verify); keys imported once per process.
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { Ed25519Verifier } from '@ocs/protocol';

let cached: { x: string; key: KeyObject } | undefined;

/** A space has one owner key, so a one-entry cache is all it needs. */
export const ownerVerify: Ed25519Verifier = (signature, message, publicKey) => {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const x = Buffer.from(publicKey).toString('base64url');
  if (cached?.x !== x) cached = { x, key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }) };
  try {
    return verify(null, message, cached.key, signature);
  } catch {
    return false;
  }
};

/** The native SHA-2, shared with the daemon and the SDK. */
export { nativeHashes } from '@ocs/protocol/node';
