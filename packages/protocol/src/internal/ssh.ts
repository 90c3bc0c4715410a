/**
 * The binary SSH formats owner keys arrive in: the wire encoding of public keys (RFC 4251 §5,
 * RFC 8709) and OpenSSH's own private key file, "openssh-key-v1" (PROTOCOL.key in OpenSSH).
 * Only unencrypted Ed25519 files are read; everything else is refused with its own code.
 */
import { OcsError } from '../errors.js';
import { timingSafeEqual, utf8, zeroize } from './bytes.js';

export const SSH_ED25519 = 'ssh-ed25519';

const OPENSSH_MAGIC = utf8('openssh-key-v1\0');
// An unencrypted file's private section is padded to the "none" cipher's block size.
const NONE_BLOCK_SIZE = 8;

const malformed = (message: string) => new OcsError('key_malformed', message);

/** Cursor over SSH wire data; every read is bounds-checked, so hostile lengths end as key_malformed. */
export class SshReader {
  readonly #buf: Uint8Array;
  #pos = 0;

  constructor(buf: Uint8Array) {
    this.#buf = buf;
  }

  u32(): number {
    if (this.#buf.length - this.#pos < 4) throw malformed('SSH key data is truncated');
    const b = this.#buf;
    const p = this.#pos;
    this.#pos += 4;
    return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  }

  /** An SSH `string`: a uint32 length, then that many bytes (a view, not a copy). */
  bytes(): Uint8Array {
    const length = this.u32();
    if (length > this.#buf.length - this.#pos) throw malformed('SSH key data is truncated');
    const out = this.#buf.subarray(this.#pos, this.#pos + length);
    this.#pos += length;
    return out;
  }

  /** An SSH `string` holding a name (key type, cipher, kdf). Names are ASCII by spec. */
  name(): string {
    return String.fromCharCode(...this.bytes().subarray(0, 256));
  }

  rest(): Uint8Array {
    const out = this.#buf.subarray(this.#pos);
    this.#pos = this.#buf.length;
    return out;
  }

  end(): void {
    if (this.#pos !== this.#buf.length) throw malformed('SSH key data has trailing bytes');
  }
}

/** Builds SSH wire data. */
export class SshWriter {
  readonly #parts: Uint8Array[] = [];

  u32(n: number): this {
    this.#parts.push(new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]));
    return this;
  }

  bytes(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }

  name(s: string): this {
    return this.bytes(utf8(s));
  }

  raw(b: Uint8Array): this {
    this.#parts.push(b);
    return this;
  }

  /** The concatenation. The caller zeroes it when it holds a secret; the parts are not copied elsewhere. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.#parts.reduce((n, p) => n + p.length, 0));
    let pos = 0;
    for (const p of this.#parts) {
      out.set(p, pos);
      pos += p.length;
    }
    return out;
  }
}

/** True for names that look like an SSH key type, so another type is "unsupported", not "malformed". */
export function isPlausibleKeyType(name: string): boolean {
  return /^[a-z][a-z0-9.@-]{2,63}$/i.test(name);
}

/** The wire blob of an Ed25519 public key: string "ssh-ed25519", string key (RFC 8709 §4). */
export function ed25519Blob(publicKey: Uint8Array): Uint8Array {
  return new SshWriter().name(SSH_ED25519).bytes(publicKey).finish();
}

/**
 * The 32 key bytes of an `ssh-ed25519` wire blob. `expectedType` is the type an authorized_keys
 * line announced: a line that says one type and carries another is broken, not merely unsupported.
 */
export function publicKeyFromBlob(blob: Uint8Array, expectedType?: string): Uint8Array {
  const r = new SshReader(blob);
  const type = r.name();
  if (expectedType !== undefined && type !== expectedType) {
    throw malformed('the SSH key type does not match its encoded data');
  }
  if (type !== SSH_ED25519) {
    throw isPlausibleKeyType(type)
      ? new OcsError('key_unsupported', 'only ssh-ed25519 SSH keys are supported')
      : malformed('not an SSH public key');
  }
  const key = r.bytes();
  r.end();
  if (key.length !== 32) throw malformed('an ssh-ed25519 key must be 32 bytes');
  return key.slice();
}

/**
 * Reads an openssh-key-v1 file (the base64-decoded body of "BEGIN OPENSSH PRIVATE KEY").
 * Returns a fresh copy of the seed and the public key the file claims; the caller must check
 * that the seed derives that public key, owns the seed, and zeroes `data` itself.
 */
export function parseOpenSshPrivateKey(data: Uint8Array): { seed: Uint8Array; publicKey: Uint8Array } {
  if (data.length < OPENSSH_MAGIC.length || !timingSafeEqual(data.subarray(0, OPENSSH_MAGIC.length), OPENSSH_MAGIC)) {
    throw malformed('not an openssh-key-v1 private key');
  }
  const r = new SshReader(data.subarray(OPENSSH_MAGIC.length));
  const cipher = r.name();
  const kdf = r.name();
  const kdfOptions = r.bytes();
  const count = r.u32();
  if (count !== 1) {
    throw new OcsError('key_unsupported', 'only OpenSSH key files holding exactly one key are supported');
  }
  const publicBlob = r.bytes();
  const section = r.bytes();
  r.end();

  // The public half is in clear even in encrypted files: an RSA key is "unsupported" whatever its passphrase.
  const publicKey = publicKeyFromBlob(publicBlob);
  if (cipher !== 'none') throw new OcsError('key_encrypted', 'the OpenSSH private key is protected by a passphrase');
  if (kdf !== 'none' || kdfOptions.length !== 0) throw malformed('an unencrypted OpenSSH key must not name a KDF');
  if (section.length % NONE_BLOCK_SIZE !== 0) throw malformed('the OpenSSH private section is not padded');

  const s = new SshReader(section);
  // Matching check integers are how OpenSSH notices a wrong passphrase or a damaged file.
  if (s.u32() !== s.u32()) throw malformed('the OpenSSH private key check integers differ');
  if (s.name() !== SSH_ED25519) throw malformed('the OpenSSH private key type does not match its public key');
  const innerPublic = s.bytes();
  const secret = s.bytes(); // seed || public key, as in the ref10 / NaCl layout
  s.bytes(); // comment
  const padding = s.rest();
  if (padding.length >= NONE_BLOCK_SIZE || padding.some((b, i) => b !== i + 1)) {
    throw malformed('the OpenSSH private section has bad padding');
  }
  if (secret.length !== 64) throw malformed('an ssh-ed25519 private key must be 64 bytes');
  if (!timingSafeEqual(innerPublic, publicKey) || !timingSafeEqual(secret.subarray(32), publicKey)) {
    throw malformed('the OpenSSH private key does not match its public key');
  }
  // The caller derives the public key from the seed and compares: that is the check that matters.
  return { seed: secret.slice(0, 32), publicKey };
}

/**
 * Writes an unencrypted openssh-key-v1 file body, byte for byte what `ssh-keygen -N ''` writes.
 * `checkint` should be random (OpenSSH's is); it only detects a wrong passphrase, so no secret.
 * The result holds the seed: the caller zeroes it.
 */
export function encodeOpenSshPrivateKey(
  seed: Uint8Array,
  publicKey: Uint8Array,
  comment: string,
  checkint: number,
): Uint8Array {
  const blob = ed25519Blob(publicKey);
  const secret = new Uint8Array(64);
  secret.set(seed);
  secret.set(publicKey, 32);
  const section = new SshWriter()
    .u32(checkint)
    .u32(checkint)
    .name(SSH_ED25519)
    .bytes(publicKey)
    .bytes(secret)
    .name(comment);
  const unpadded = section.finish();
  const padLength = (NONE_BLOCK_SIZE - (unpadded.length % NONE_BLOCK_SIZE)) % NONE_BLOCK_SIZE;
  const padded = new Uint8Array(unpadded.length + padLength);
  padded.set(unpadded);
  for (let i = 0; i < padLength; i++) padded[unpadded.length + i] = i + 1;
  zeroize(secret, unpadded);

  const out = new SshWriter()
    .raw(OPENSSH_MAGIC)
    .name('none')
    .name('none')
    .bytes(new Uint8Array(0))
    .u32(1)
    .bytes(blob)
    .bytes(padded)
    .finish();
  zeroize(padded);
  return out;
}
