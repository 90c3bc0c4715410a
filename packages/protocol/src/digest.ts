/**
 * RFC 9530 `Content-Digest` for request and response bodies.
 *
 * Hashing is pluggable: the default is @noble/hashes (works in browsers), the node daemon
 * passes node:crypto's native hashes for multi-GB image uploads.
 */
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { parseDictionary, serializeDictionary, type Dictionary } from 'structured-headers';
import { OcsError } from './errors.js';
import { timingSafeEqual } from './internal/bytes.js';

export const DIGEST_ALGORITHMS = ['sha-256', 'sha-512'] as const;
export type DigestAlgorithm = (typeof DIGEST_ALGORITHMS)[number];

/** An incremental hash: what both @noble/hashes and node:crypto's Hash can be adapted to. */
export interface IncrementalHash {
  update(data: Uint8Array): unknown;
  digest(): Uint8Array;
}
export type HashFactory = (alg: DigestAlgorithm) => IncrementalHash;

export const nobleHashes: HashFactory = (alg) => {
  const h = alg === 'sha-256' ? sha256.create() : sha512.create();
  return { update: (d) => h.update(d), digest: () => h.digest() };
};

/** `sha-256=:…:` for a whole body. */
export function contentDigest(
  body: Uint8Array,
  alg: DigestAlgorithm = 'sha-256',
  hashes: HashFactory = nobleHashes,
): string {
  const h = hashes(alg);
  h.update(body);
  return serializeDictionary(new Map([[alg, [h.digest(), new Map()]]]) as Dictionary);
}

function isDigestAlgorithm(name: string): name is DigestAlgorithm {
  return (DIGEST_ALGORITHMS as readonly string[]).includes(name);
}

/**
 * Parses a `Content-Digest` header into the digests we can check. Algorithms we do not know
 * (or consider too weak, like md5 and sha) are ignored as RFC 9530 allows, but at least one
 * supported one must be there: a header we cannot check protects nothing.
 */
export function parseContentDigest(header: string | undefined): Map<DigestAlgorithm, Uint8Array> {
  if (header === undefined || header.trim() === '') {
    throw new OcsError('digest_missing', 'the request has a body but no Content-Digest header');
  }
  let dict: Dictionary;
  try {
    dict = parseDictionary(header);
  } catch {
    throw new OcsError('digest_malformed', 'Content-Digest is not a structured dictionary');
  }
  const found = new Map<DigestAlgorithm, Uint8Array>();
  for (const [name, member] of dict) {
    if (!isDigestAlgorithm(name)) continue;
    const value = member[0];
    if (!(value instanceof ArrayBuffer)) {
      throw new OcsError('digest_malformed', `Content-Digest ${name} is not a byte sequence`);
    }
    const bytes = new Uint8Array(value);
    if (bytes.length !== (name === 'sha-256' ? 32 : 64)) {
      throw new OcsError('digest_malformed', `Content-Digest ${name} has the wrong length`);
    }
    found.set(name, bytes);
  }
  if (found.size === 0) {
    throw new OcsError('digest_malformed', 'Content-Digest names no supported algorithm', {
      supported: [...DIGEST_ALGORITHMS],
    });
  }
  return found;
}

/**
 * Checks a body as it streams past, so a large upload is hashed once and never buffered.
 * Every supported digest the sender listed must match.
 */
export function createDigestVerifier(
  header: string | undefined,
  hashes: HashFactory = nobleHashes,
): { update(chunk: Uint8Array): void; verify(): void } {
  const expected = parseContentDigest(header);
  const running = [...expected.keys()].map((alg) => [alg, hashes(alg)] as const);
  return {
    update(chunk) {
      for (const [, h] of running) h.update(chunk);
    },
    verify() {
      for (const [alg, h] of running) {
        if (!timingSafeEqual(h.digest(), expected.get(alg)!)) {
          throw new OcsError('digest_mismatch', 'the body does not match its Content-Digest', { algorithm: alg });
        }
      }
    },
  };
}

export function verifyContentDigest(
  header: string | undefined,
  body: Uint8Array,
  hashes: HashFactory = nobleHashes,
): void {
  const v = createDigestVerifier(header, hashes);
  v.update(body);
  v.verify();
}
