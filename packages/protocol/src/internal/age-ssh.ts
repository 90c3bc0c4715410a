/**
 * The age `ssh-ed25519` recipient type (C2SP age spec, "The ssh-ed25519 recipient type"; Go:
 * filippo.io/age/agessh), as typage Recipient and Identity objects.
 *
 * Stanza: `-> ssh-ed25519 <tag> <share>` over a 32-byte body, where tag is the first 4 bytes of
 * SHA-256 of the SSH key's wire blob, share an ephemeral X25519 public key, and the body the file
 * key sealed with ChaCha20-Poly1305 under a key derived from the (tweaked) X25519 shared secret.
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { base64nopad } from '@scure/base';
import { Stanza, type Identity, type Recipient } from 'age-encryption';
import type { Ed25519PrivateKey, Ed25519PublicKey } from '../keys.js';
import { utf8, zeroize } from './bytes.js';

const STANZA_TYPE = 'ssh-ed25519';
const LABEL = utf8('age-encryption.org/v1/ssh-ed25519');
// Each wrapping key seals exactly one file key, so a fixed nonce is safe (the age spec says so).
const ZERO_NONCE = new Uint8Array(12);
const SEALED_FILE_KEY_LENGTH = 16 + 16;

/** Lets an identity skip stanzas meant for other keys without trying to open them. */
function stanzaTag(sshBlob: Uint8Array): string {
  return base64nopad.encode(sha256(sshBlob).subarray(0, 4));
}

/**
 * The spec multiplies the shared secret by a scalar derived from the SSH key itself, so the
 * X25519 form of an Ed25519 key can't be mistaken for (or attacked as) a plain X25519 recipient.
 */
function tweakedSecret(sharedSecret: Uint8Array, sshBlob: Uint8Array): Uint8Array {
  const tweak = hkdf(sha256, new Uint8Array(0), sshBlob, LABEL, 32);
  try {
    return x25519.scalarMult(tweak, sharedSecret);
  } finally {
    zeroize(tweak, sharedSecret);
  }
}

function wrappingKey(secret: Uint8Array, share: Uint8Array, recipient: Uint8Array): Uint8Array {
  const salt = new Uint8Array(64);
  salt.set(share);
  salt.set(recipient, 32);
  try {
    return hkdf(sha256, secret, salt, LABEL, 32);
  } finally {
    zeroize(secret);
  }
}

/** Encrypts age file keys to an owner's Ed25519 public key. */
export class SshEd25519Recipient implements Recipient {
  readonly #blob: Uint8Array;
  readonly #montgomery: Uint8Array;

  constructor(owner: Ed25519PublicKey) {
    this.#blob = owner.sshWireBlob();
    this.#montgomery = ed25519.utils.toMontgomery(owner.bytes);
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const ephemeral = randomBytes(32);
    let key: Uint8Array | undefined;
    try {
      const share = x25519.scalarMultBase(ephemeral);
      const secret = tweakedSecret(x25519.scalarMult(ephemeral, this.#montgomery), this.#blob);
      key = wrappingKey(secret, share, this.#montgomery);
      const body = chacha20poly1305(key, ZERO_NONCE).encrypt(fileKey);
      return [new Stanza([STANZA_TYPE, stanzaTag(this.#blob), base64nopad.encode(share)], body)];
    } finally {
      zeroize(ephemeral, key);
    }
  }
}

/**
 * Decrypts age file keys with an owner's Ed25519 private key. Holds the X25519 form of the
 * seed until {@link destroy}.
 */
export class SshEd25519Identity implements Identity {
  readonly #blob: Uint8Array;
  readonly #tag: string;
  readonly #montgomery: Uint8Array;
  readonly #secret: Uint8Array;

  constructor(owner: Ed25519PrivateKey) {
    this.#blob = owner.publicKey.sshWireBlob();
    this.#tag = stanzaTag(this.#blob);
    this.#montgomery = ed25519.utils.toMontgomery(owner.publicKey.bytes);
    const seed = owner.exportSeed();
    try {
      this.#secret = ed25519.utils.toMontgomerySecret(seed);
    } finally {
      zeroize(seed);
    }
  }

  /** Null when no stanza is ours; throws when one claims to be ours but does not open (typage's contract). */
  unwrapFileKey(stanzas: Stanza[]): Uint8Array | null {
    for (const stanza of stanzas) {
      const [type, tag, shareText] = stanza.args;
      if (type !== STANZA_TYPE) continue;
      if (stanza.args.length !== 3 || shareText === undefined) throw new Error('invalid ssh-ed25519 stanza');
      if (tag !== this.#tag) continue;
      const share = base64nopad.decode(shareText);
      if (share.length !== 32 || stanza.body.length !== SEALED_FILE_KEY_LENGTH) {
        throw new Error('invalid ssh-ed25519 stanza');
      }
      // scalarMult refuses a low-order share (all-zero shared secret), as the spec requires.
      const secret = tweakedSecret(x25519.scalarMult(this.#secret, share), this.#blob);
      const key = wrappingKey(secret, share, this.#montgomery);
      try {
        return chacha20poly1305(key, ZERO_NONCE).decrypt(stanza.body);
      } finally {
        zeroize(key);
      }
    }
    return null;
  }

  destroy(): void {
    zeroize(this.#secret);
  }
}
