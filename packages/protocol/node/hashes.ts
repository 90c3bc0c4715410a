import { createHash } from 'node:crypto';
import type { HashFactory } from '@ocs/protocol';

/**
 * node:crypto's (OpenSSL's) SHA-2 for `Content-Digest`, several times faster than the @noble
 * default on multi-GB uploads (bench/verify). Shared by the daemon, the space process and the SDK.
 */
export const nativeHashes: HashFactory = (alg) => {
  const h = createHash(alg === 'sha-256' ? 'sha256' : 'sha512');
  return { update: (d) => h.update(d), digest: () => new Uint8Array(h.digest()) };
};
