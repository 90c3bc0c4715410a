/**
 * bench/verify: signed-request verifications per second on one core (JWT + RFC 9421 + RFC 9530
 * digest + replay cache), as a ratio to raw Ed25519 verifies per second with node:crypto
 * (OpenSSL), measured in the same run. Also: @noble/ed25519 vs node:crypto for the server side,
 * and `openssl speed ed25519` for reference. Goal: ratio >= 0.5.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import {
  MemoryNonceStore,
  authorize,
  cacheTokens,
  contentDigest,
  createTokenVerifier,
  mintToken,
  nobleVerify,
  signRequest,
  type Ed25519Verifier,
  type HashFactory,
} from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';
import { ratePerSecond, ratePerSecondAsync, report } from './measure.js';

ed.hashes.sha512 = sha512;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const raw = new Uint8Array(Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'));
const message = new Uint8Array(300).fill(7);
const signature = new Uint8Array(sign(null, message, privateKey));
const keyObject = publicKey;

const nodeVerify: Ed25519Verifier = (s, m) => verify(null, m, keyObject, s);

// Baselines: raw verifies.
const nodeRaw = ratePerSecond(() => void verify(null, message, keyObject, signature), SECONDS);
const nobleRaw = ratePerSecond(() => void ed.verify(signature, message, raw), SECONDS);

let opensslRate: number | undefined;
try {
  const out = execFileSync('openssl', ['speed', '-seconds', String(SECONDS), 'ed25519'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  }).toString();
  const m = /bits EdDSA \(Ed25519\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)/.exec(out);
  if (m) opensslRate = Number(m[2]);
} catch {
  opensslRate = undefined;
}

// A realistic signed request: token + signature over method, URI, digest, authorization.
const issuerKeys = generateKeyPairSync('ed25519');
const jwk = { ...issuerKeys.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA' };
const verifier = createTokenVerifier({
  issuers: [{ issuer: 'bench', keys: { keys: [jwk] } as never }],
  audiences: ['node-1'],
});
const token = await mintToken({
  privateKey: issuerKeys.privateKey,
  kid: 'k1',
  alg: 'EdDSA',
  issuer: 'bench',
  audience: 'node-1',
  subject: 'b',
  org: 'o',
  roles: ['containers'],
  lifetimeSeconds: 600,
});
const body = new TextEncoder().encode(
  JSON.stringify({ name: 'web', image: 'busybox', cpuMillicores: 100, memoryBytes: 33554432 }),
);
const url = 'https://node-1:8443/v1/spaces/sp_aaaaaaaaaaaaaaaaaaaa/api/containers';
const baseHeaders = {
  authorization: `Bearer ${token}`,
  'content-type': 'application/json',
  'content-length': String(body.length),
  'content-digest': contentDigest(body),
};

// Pre-sign a pool of requests (distinct nonces) so the loop measures verification only.
const POOL = 4096;
const pool = await Promise.all(
  Array.from({ length: POOL }, async () => {
    const sig = await signRequest(
      { method: 'POST', url, headers: baseHeaders },
      { keyId: 'owner', sign: (m) => new Uint8Array(sign(null, m, privateKey)), expiresIn: 300 },
    );
    const headers = { ...baseHeaders, ...sig };
    return { method: 'POST', url, headers, body, rawHeaders: Object.entries(headers).flat() };
  }),
);

async function measureSigned(v: Ed25519Verifier, hashes: HashFactory | undefined, cached: boolean): Promise<number> {
  const verifyToken = cached ? cacheTokens((t) => verifier(t)) : (t: string | undefined) => verifier(t);
  let i = 0;
  let store = new MemoryNonceStore();
  return ratePerSecondAsync(async () => {
    if (i % POOL === 0) store = new MemoryNonceStore(); // each pooled request is fresh once per lap
    const req = pool[i++ % POOL]!;
    await authorize(req, {
      verifyToken,
      roles: ['containers'],
      signature: { resolveKey: () => raw, verify: v, nonceStore: store },
      ...(hashes ? { hashes } : {}),
    });
  }, SECONDS);
}

const signedNodeCached = await measureSigned(nodeVerify, nativeHashes, true);
const signedNodeUncached = await measureSigned(nodeVerify, nativeHashes, false);
const signedNoble = await measureSigned(nobleVerify, undefined, true);

report('verify', {
  'raw ed25519 verify/s, node:crypto (baseline)': nodeRaw,
  'raw ed25519 verify/s, @noble/ed25519': nobleRaw,
  'raw ed25519 verify/s, openssl speed': opensslRate ?? 'n/a',
  'signed requests/s, node:crypto, token cache': signedNodeCached,
  'signed requests/s, node:crypto, no cache': signedNodeUncached,
  'signed requests/s, @noble, token cache': signedNoble,
  'ratio signed/raw (server path)': signedNodeCached / nodeRaw,
  'ratio signed/raw without token cache': signedNodeUncached / nodeRaw,
  'noble/node:crypto raw verify': nobleRaw / nodeRaw,
  goal: 'ratio >= 0.5',
});
