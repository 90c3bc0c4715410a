/**
 * Key wrapping: a space's data key, encrypted to its owner's Ed25519 key as a standard age file
 * (age-encryption.org/v1, `ssh-ed25519` recipient type), ASCII-armored so it travels in JSON.
 *
 * Being standard is the point: the owner needs none of our software to recover the key,
 * `age -d -i ~/.ssh/id_ed25519 wrapped.age` prints it. typage (age-encryption) writes and reads
 * the header, its MAC and the payload; the recipient type itself is ours (internal/age-ssh.ts).
 */
import { armor, Decrypter, Encrypter } from 'age-encryption';
import { OcsError } from './errors.js';
import { SshEd25519Identity, SshEd25519Recipient } from './internal/age-ssh.js';
import type { Ed25519PrivateKey, Ed25519PublicKey } from './keys.js';

/** A wrapped data key is a few hundred bytes; refusing more bounds the work done for garbage. */
export const MAX_WRAPPED_KEY_LENGTH = 16_384;

const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';
const BINARY_INTRO = 'age-encryption.org/v1\n';

/**
 * Encrypts `dataKey` to `owner` as an armored age file whose plaintext is exactly those bytes.
 * `dataKey` is read, not kept or modified; the caller still zeroes it.
 */
export async function wrapKey(dataKey: Uint8Array, owner: Ed25519PublicKey): Promise<string> {
  if (!(dataKey instanceof Uint8Array) || dataKey.length === 0) throw new TypeError('dataKey must be non-empty bytes');
  const encrypter = new Encrypter();
  encrypter.addRecipient(new SshEd25519Recipient(owner));
  return armor.encode(await encrypter.encrypt(dataKey));
}

/**
 * Opens an age file made by {@link wrapKey} (or by `age -R owner.pub`), armored or binary, with
 * the owner's private key. Other recipient stanzas in the file are ignored.
 * @throws OcsError `unwrap_failed` for anything that does not open: another owner's key, a
 *   tampered header or payload, no ssh-ed25519 stanza, not an age file at all.
 */
export async function unwrapKey(wrapped: string | Uint8Array, owner: Ed25519PrivateKey): Promise<Uint8Array> {
  // Outside the try: a destroyed key is the caller's bug, not a file that fails to open.
  const identity = new SshEd25519Identity(owner);
  try {
    const file = ageFileBytes(wrapped);
    const decrypter = new Decrypter();
    decrypter.addIdentity(identity);
    return await decrypter.decrypt(file);
  } catch (err) {
    if (err instanceof OcsError) throw err;
    // One code for every cause: telling "wrong key" from "tampered" helps only an attacker.
    throw new OcsError('unwrap_failed', 'the wrapped key could not be opened with this key');
  } finally {
    identity.destroy();
  }
}

function ageFileBytes(wrapped: string | Uint8Array): Uint8Array {
  if (wrapped.length > MAX_WRAPPED_KEY_LENGTH) {
    throw new OcsError('unwrap_failed', 'the wrapped key is too large');
  }
  if (typeof wrapped === 'string') {
    if (!wrapped.trimStart().startsWith(ARMOR_BEGIN)) throw new OcsError('unwrap_failed', 'not an armored age file');
    return armor.decode(wrapped);
  }
  if (wrapped instanceof Uint8Array) {
    const head = new TextDecoder().decode(wrapped.subarray(0, 64));
    if (head.startsWith(BINARY_INTRO)) return wrapped;
    if (head.trimStart().startsWith(ARMOR_BEGIN)) return armor.decode(new TextDecoder().decode(wrapped));
  }
  throw new OcsError('unwrap_failed', 'not an age file');
}

/**
 * Seals a data key to a node's unlock recipient (`age1…`, from `GET /v1/node`) for unlock and
 * rotate-key: only that node's identity opens it, and only while it runs.
 */
export async function sealToNode(dataKey: Uint8Array, unlockRecipient: string): Promise<string> {
  if (!(dataKey instanceof Uint8Array) || dataKey.length === 0) throw new TypeError('dataKey must be non-empty bytes');
  const encrypter = new Encrypter();
  encrypter.addRecipient(unlockRecipient);
  return armor.encode(await encrypter.encrypt(dataKey));
}

/** Opens the owner's wrapped key and seals it to the node, never writing the plaintext anywhere. */
export async function rewrapForNode(
  wrapped: string,
  owner: Ed25519PrivateKey,
  unlockRecipient: string,
): Promise<string> {
  const key = await unwrapKey(wrapped, owner);
  try {
    return await sealToNode(key, unlockRecipient);
  } finally {
    key.fill(0);
  }
}
