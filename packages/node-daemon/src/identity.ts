/**
 * The node's long-lived keys, made at first start and kept 0600 in the state directory:
 * - identity: Ed25519, names the node (published in GET /v1/node);
 * - unlock: an age X25519 identity; owners seal their space key to its recipient to unlock a
 *   space, so a space key never crosses the wire in the clear (and standard `age -r` can do it);
 * - dev issuer: only on development nodes, an Ed25519 JWT signing key so `ocs` can mint
 *   short tokens for the local farmer.
 * None of these opens a space's data: space keys are never stored (see docs/architecture.md).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { readSecretFile, writeSecretFile } from './files.js';
import { devIssuer } from '@ocs/protocol';

export interface NodeIdentity {
  identityKey: KeyObject;
  /** base64url of the raw Ed25519 public key. */
  identityPublic: string;
  /** AGE-SECRET-KEY-1…; never leaves this process. */
  unlockIdentity: string;
  unlockRecipient: string;
}

export interface DevIssuer {
  issuer: string;
  kid: string;
  privateKey: KeyObject;
  publicJwk: Record<string, unknown>;
}

function loadOrCreateEd25519(path: string): KeyObject {
  const pem = readSecretFile(path);
  if (pem !== undefined) return createPrivateKey(pem);
  const { privateKey } = generateKeyPairSync('ed25519');
  writeSecretFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  return privateKey;
}

export function rawPublic(key: KeyObject): string {
  const jwk = createPublicKey(key).export({ format: 'jwk' });
  return String(jwk.x);
}

export async function loadOrCreateIdentity(stateDir: string): Promise<NodeIdentity> {
  const identityKey = loadOrCreateEd25519(join(stateDir, 'keys', 'identity.pem'));
  const unlockPath = join(stateDir, 'keys', 'unlock.agekey');
  let unlockIdentity = readSecretFile(unlockPath)?.trim();
  if (!unlockIdentity) {
    unlockIdentity = await generateX25519Identity();
    writeSecretFile(unlockPath, `${unlockIdentity}\n`);
  }
  return {
    identityKey,
    identityPublic: rawPublic(identityKey),
    unlockIdentity,
    unlockRecipient: await identityToRecipient(unlockIdentity),
  };
}

/** Path of the dev issuer's private key, for `ocs` on the same machine (root only). */
export function devIssuerKeyPath(stateDir: string): string {
  return join(stateDir, devIssuer.keyFile);
}

export function loadOrCreateDevIssuer(stateDir: string, nodeId: string): DevIssuer {
  const privateKey = loadOrCreateEd25519(devIssuerKeyPath(stateDir));
  const x = rawPublic(privateKey);
  const kid = devIssuer.kid(x);
  return {
    issuer: devIssuer.name(nodeId),
    kid,
    privateKey,
    publicJwk: { kty: 'OKP', crv: 'Ed25519', x, kid, alg: 'EdDSA', use: 'sig' },
  };
}
