/**
 * Owner keys: Ed25519 only, read from the formats owners already have.
 *
 * Public keys: raw 32 bytes (base64url, or standard base64), a JWK (OKP/Ed25519), an OpenSSH
 * `ssh-ed25519` line, or an SPKI "BEGIN PUBLIC KEY" PEM (what openssl and node:crypto write).
 * Private keys: PKCS#8 PEM (RFC 8410, v1 and v2), a JWK with `d`, an unencrypted OpenSSH file.
 *
 * Every refusal is an OcsError: `key_unsupported` for a sound key of another type (RSA, ECDSA,
 * X25519, Ed448...), `key_encrypted` for passphrase-protected files, `key_malformed` for the rest.
 * Messages are fixed strings: nothing read from the input is echoed.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hexToBytes, randomBytes } from '@noble/hashes/utils.js';
import { base64, base64nopad, base64urlnopad } from '@scure/base';
import { OcsError } from './errors.js';
import { timingSafeEqual, zeroize } from './internal/bytes.js';
import {
  ed25519Blob,
  encodeOpenSshPrivateKey,
  isPlausibleKeyType,
  parseOpenSshPrivateKey,
  publicKeyFromBlob,
  SSH_ED25519,
} from './internal/ssh.js';

/** Longest key text accepted: an RSA-16384 OpenSSH file is ~13 KB; anything bigger is not a key. */
export const MAX_KEY_INPUT_LENGTH = 65_536;

// Type aliases rather than interfaces, so they pass where jose or node:crypto expect a JsonWebKey.
/** A public JWK as RFC 8037 defines it for Ed25519. */
export type Ed25519PublicJwk = { kty: 'OKP'; crv: 'Ed25519'; x: string };

/** A private JWK: {@link Ed25519PublicJwk} plus the seed `d`. Secret. */
export type Ed25519PrivateJwk = Ed25519PublicJwk & { d: string };

/** An Ed25519 public key, checked to be a valid curve point of large order. */
export class Ed25519PublicKey {
  /** The 32-byte RFC 8032 encoding. */
  readonly bytes: Uint8Array;

  private constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  /**
   * Checks and copies 32 raw bytes.
   * @throws OcsError `key_malformed` unless they encode a curve point that is not of small order.
   */
  static fromBytes(bytes: Uint8Array): Ed25519PublicKey {
    if (bytes.length !== 32) throw malformed('an Ed25519 public key must be 32 bytes');
    let point;
    try {
      point = ed25519.Point.fromBytes(bytes);
    } catch {
      throw malformed('not a point on the Ed25519 curve');
    }
    // Small-order keys verify forged signatures and turn key wrapping into a no-op.
    if (point.isSmallOrder()) throw malformed('a degenerate (small-order) Ed25519 public key');
    return new Ed25519PublicKey(bytes.slice());
  }

  /** Unpadded base64url of {@link bytes}: the canonical form in our JSON. */
  toBase64url(): string {
    return base64urlnopad.encode(this.bytes);
  }

  toJwk(): Ed25519PublicJwk {
    return { kty: 'OKP', crv: 'Ed25519', x: this.toBase64url() };
  }

  /** The SSH wire encoding (RFC 8709): what fingerprints and age tags hash. */
  sshWireBlob(): Uint8Array {
    return ed25519Blob(this.bytes);
  }

  /** An authorized_keys / `.pub` line: `ssh-ed25519 AAAA... comment`. */
  toOpenSsh(comment?: string): string {
    const line = `${SSH_ED25519} ${base64.encode(this.sshWireBlob())}`;
    if (comment === undefined || comment === '') return line;
    if (/[\r\n]/.test(comment)) throw new TypeError('an OpenSSH key comment must be a single line');
    return `${line} ${comment}`;
  }

  /** `SHA256:` + unpadded base64 of SHA-256 of the wire blob: exactly what `ssh-keygen -lf` prints. */
  fingerprint(): string {
    return `SHA256:${base64nopad.encode(sha256(this.sshWireBlob()))}`;
  }

  equals(other: Ed25519PublicKey): boolean {
    return timingSafeEqual(this.bytes, other.bytes);
  }

  /** JSON carries the base64url form, never a byte-by-byte object. */
  toJSON(): string {
    return this.toBase64url();
  }
}

/**
 * An Ed25519 private key: the 32-byte RFC 8032 seed. The seed lives in a private field (not
 * enumerable, not serialised) and is zeroed by {@link destroy}; after that every use throws.
 */
export class Ed25519PrivateKey {
  readonly publicKey: Ed25519PublicKey;
  readonly #seed: Uint8Array;
  #destroyed = false;

  private constructor(seed: Uint8Array) {
    this.#seed = seed;
    this.publicKey = Ed25519PublicKey.fromBytes(ed25519.getPublicKey(seed));
  }

  /**
   * Copies a 32-byte RFC 8032 seed; the caller still owns (and zeroes) its own buffer.
   * @throws OcsError `key_malformed` for any other length.
   */
  static fromSeed(seed: Uint8Array): Ed25519PrivateKey {
    if (seed.length !== 32) throw malformed('an Ed25519 private key must be 32 bytes');
    return new Ed25519PrivateKey(seed.slice());
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** RFC 8032 Ed25519 signature (64 bytes). */
  sign(message: Uint8Array): Uint8Array {
    return ed25519.sign(message, this.#live());
  }

  /** A copy of the seed, for key derivation or writing a key file. The caller zeroes it. */
  exportSeed(): Uint8Array {
    return this.#live().slice();
  }

  /** PKCS#8 v1 PEM ("BEGIN PRIVATE KEY"), as `openssl genpkey -algorithm ed25519` writes it. */
  toPkcs8Pem(): string {
    const der = new Uint8Array(PKCS8_V1_PREFIX.length + 32);
    der.set(PKCS8_V1_PREFIX);
    der.set(this.#live(), PKCS8_V1_PREFIX.length);
    try {
      return pem('PRIVATE KEY', der, 64);
    } finally {
      zeroize(der);
    }
  }

  /** An unencrypted openssh-key-v1 file, readable by `ssh-keygen -y -f`, `ssh -i` and `age -d -i`. */
  toOpenSshPrivate(comment = ''): string {
    if (/[\r\n]/.test(comment)) throw new TypeError('an OpenSSH key comment must be a single line');
    const random = randomBytes(4);
    const checkint = new DataView(random.buffer, random.byteOffset, 4).getUint32(0);
    const data = encodeOpenSshPrivateKey(this.#live(), this.publicKey.bytes, comment, checkint);
    try {
      return pem('OPENSSH PRIVATE KEY', data, 70);
    } finally {
      zeroize(data);
    }
  }

  toJwk(): Ed25519PrivateJwk {
    return { ...this.publicKey.toJwk(), d: base64urlnopad.encode(this.#live()) };
  }

  /** Zeroes the seed. Idempotent. */
  destroy(): void {
    zeroize(this.#seed);
    this.#destroyed = true;
  }

  /** Only the public half goes into JSON, so logging a key object by mistake leaks nothing. */
  toJSON(): { publicKey: string } {
    return { publicKey: this.publicKey.toBase64url() };
  }

  #live(): Uint8Array {
    // A zeroed seed is a valid key everyone knows: refuse rather than sign with it.
    if (this.#destroyed) throw new Error('this private key has been destroyed');
    return this.#seed;
  }
}

/** A new random owner key. */
export function generatePrivateKey(): Ed25519PrivateKey {
  return fromTemporarySeed(randomBytes(32));
}

/**
 * Pure-JS Ed25519 verification (RFC 8032, strict encodings). Never throws: anything that is not a
 * valid signature by that key is `false`. Servers may inject a faster verifier.
 */
export function verifyEd25519(
  signature: Uint8Array,
  message: Uint8Array,
  publicKey: Ed25519PublicKey | Uint8Array,
): boolean {
  try {
    const key = publicKey instanceof Ed25519PublicKey ? publicKey.bytes : publicKey;
    // Strict RFC 8032 encodings, as node:crypto (OpenSSL) checks them: both verifiers must agree.
    return ed25519.verify(signature, message, key, { zip215: false });
  } catch {
    return false;
  }
}

/**
 * Reads an owner's public key: raw base64url/base64 (32 bytes), a JWK (object or JSON text), an
 * OpenSSH `ssh-ed25519` line, an SPKI PEM, 32 raw bytes, or an {@link Ed25519PublicKey}.
 * @throws OcsError `key_unsupported`, `key_malformed`; never anything else.
 */
export function parsePublicKey(input: string | object): Ed25519PublicKey {
  return guarded(() => {
    if (input instanceof Ed25519PublicKey) return input;
    if (input instanceof Uint8Array) return Ed25519PublicKey.fromBytes(input);
    if (input instanceof Ed25519PrivateKey) throw expectedPublic();
    if (typeof input !== 'string') return publicFromJwk(jwkObject(input));
    const text = boundedText(input);
    if (text.startsWith('{')) return publicFromJwk(jwkObject(parseJson(text)));
    if (text.startsWith('-----BEGIN ')) return publicFromPem(text);
    if (/\s/.test(text)) return publicFromOpenSshLine(text);
    return Ed25519PublicKey.fromBytes(decodeRawBase64(text));
  });
}

/**
 * Reads an owner's private key: PKCS#8 PEM (v1, or v2 with the public key, which must match),
 * a JWK with `d` (object or JSON text), or an unencrypted OpenSSH private key file.
 * @throws OcsError `key_encrypted`, `key_unsupported`, `key_malformed`; never anything else.
 */
export function parsePrivateKey(input: string | object): Ed25519PrivateKey {
  return guarded(() => {
    if (input instanceof Ed25519PrivateKey) return input;
    if (input instanceof Ed25519PublicKey) throw expectedPrivate();
    if (typeof input !== 'string') return privateFromJwk(jwkObject(input));
    const text = boundedText(input);
    if (text.startsWith('{')) return privateFromJwk(jwkObject(parseJson(text)));
    if (text.startsWith('-----BEGIN ')) return privateFromPem(text);
    if (/\s/.test(text)) {
      publicFromOpenSshLine(text); // its own refusal (RSA, garbage) if it is not even an Ed25519 key
      throw expectedPrivate();
    }
    throw malformed('not a PEM, OpenSSH or JWK private key');
  });
}

// ---------------------------------------------------------------------------------------------
// Plumbing

function malformed(message: string): OcsError {
  return new OcsError('key_malformed', message);
}
function unsupported(message: string): OcsError {
  return new OcsError('key_unsupported', message);
}
const expectedPublic = () => unsupported('expected a public key, got a private key');
const expectedPrivate = () => unsupported('expected a private key, got a public key');

/** Builds a key from a seed buffer nobody else holds, then zeroes that buffer. */
function fromTemporarySeed(seed: Uint8Array): Ed25519PrivateKey {
  try {
    return Ed25519PrivateKey.fromSeed(seed);
  } finally {
    zeroize(seed);
  }
}

/** The parsers' promise: hostile input ends as an OcsError, never as a library's TypeError or RangeError. */
function guarded<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof OcsError) throw err;
    throw malformed('could not parse the key');
  }
}

function boundedText(input: string): string {
  if (input.length > MAX_KEY_INPUT_LENGTH) throw malformed('key input is too large');
  const text = input.trim();
  if (text === '') throw malformed('key input is empty');
  return text;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw malformed('key input is not valid JSON');
  }
}

/** Decodes one base64 alphabet, with or without padding, and refuses non-canonical encodings. */
function decodeRawBase64(text: string): Uint8Array {
  const m = /^([A-Za-z0-9+/_-]+)(={0,2})$/.exec(text);
  if (!m) throw malformed('not base64url');
  const [, body = '', padding] = m;
  if (padding && text.length % 4 !== 0) throw malformed('bad base64 padding');
  const url = /[-_]/.test(body);
  if (url && /[+/]/.test(body)) throw malformed('mixed base64 alphabets');
  try {
    return (url ? base64urlnopad : base64nopad).decode(body);
  } catch {
    throw malformed('not base64url');
  }
}

// ---------------------------------------------------------------------------------------------
// JWK (RFC 7517, RFC 8037)

type JwkFields = Record<string, unknown>;

function jwkObject(value: unknown): JwkFields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('not a JWK object');
  const jwk = value as JwkFields;
  const { kty, crv, alg } = jwk;
  if (typeof kty !== 'string') throw malformed('JWK has no kty');
  if (kty !== 'OKP') throw unsupported('only OKP (Ed25519) JWKs are supported');
  if (typeof crv !== 'string') throw malformed('OKP JWK has no crv');
  if (crv !== 'Ed25519') throw unsupported('only the Ed25519 curve is supported');
  if (alg !== undefined && alg !== 'EdDSA' && alg !== 'Ed25519') throw unsupported('JWK alg must be EdDSA');
  return jwk;
}

function jwkBytes(jwk: JwkFields, field: 'x' | 'd'): Uint8Array {
  const value = jwk[field];
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(value)) {
    throw malformed(`JWK ${field} must be 32 bytes of unpadded base64url`);
  }
  try {
    return base64urlnopad.decode(value);
  } catch {
    throw malformed(`JWK ${field} must be 32 bytes of unpadded base64url`);
  }
}

function publicFromJwk(jwk: JwkFields): Ed25519PublicKey {
  if (jwk.d !== undefined) throw expectedPublic();
  return Ed25519PublicKey.fromBytes(jwkBytes(jwk, 'x'));
}

function privateFromJwk(jwk: JwkFields): Ed25519PrivateKey {
  if (jwk.d === undefined) throw expectedPrivate();
  const x = jwkBytes(jwk, 'x');
  return withPublicCheck(fromTemporarySeed(jwkBytes(jwk, 'd')), x);
}

/** A private key whose stored public half disagrees with its seed is damaged or forged: refuse it. */
function withPublicCheck(key: Ed25519PrivateKey, claimedPublic: Uint8Array | undefined): Ed25519PrivateKey {
  if (claimedPublic !== undefined && !timingSafeEqual(key.publicKey.bytes, claimedPublic)) {
    key.destroy();
    throw malformed('the private key does not match its public key');
  }
  return key;
}

// ---------------------------------------------------------------------------------------------
// OpenSSH public key lines

function publicFromOpenSshLine(text: string): Ed25519PublicKey {
  if (/[\r\n]/.test(text)) throw malformed('expected a single OpenSSH public key line');
  const [type = '', data = ''] = text.split(/[ \t]+/);
  if (!isPlausibleKeyType(type)) throw malformed('not an OpenSSH public key line');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data) || data.length % 4 !== 0) throw malformed('bad base64 in OpenSSH key');
  let blob;
  try {
    blob = base64.decode(data);
  } catch {
    throw malformed('bad base64 in OpenSSH key');
  }
  return Ed25519PublicKey.fromBytes(publicKeyFromBlob(blob, type));
}

// ---------------------------------------------------------------------------------------------
// PEM (RFC 7468) and the two DER structures RFC 8410 defines for Ed25519

const ED25519_OID = Uint8Array.of(0x2b, 0x65, 0x70); // 1.3.101.112
// The fixed 16-byte head of every v1 Ed25519 PrivateKeyInfo; the seed follows.
const PKCS8_V1_PREFIX = hexToBytes('302e020100300506032b657004220420');

// RSA and EC have dedicated PEM labels; they are keys, just not ours.
const FOREIGN_PEM_LABELS = [
  'RSA PRIVATE KEY',
  'EC PRIVATE KEY',
  'DSA PRIVATE KEY',
  'RSA PUBLIC KEY',
  'SSH2 PUBLIC KEY',
];

function pem(label: string, der: Uint8Array, width: number): string {
  const b64 = base64.encode(der);
  const lines = [`-----BEGIN ${label}-----`];
  for (let i = 0; i < b64.length; i += width) lines.push(b64.slice(i, i + width));
  lines.push(`-----END ${label}-----`, '');
  return lines.join('\n');
}

/** One PEM block and nothing else around it. `der` is a fresh buffer the caller zeroes. */
function readPem(text: string): { label: string; der: Uint8Array } {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const label = /^-----BEGIN ([A-Z0-9 ]{1,40})-----$/.exec(lines[0] ?? '')?.[1];
  if (label === undefined || lines.length < 3 || lines[lines.length - 1] !== `-----END ${label}-----`) {
    throw malformed('not a single well-formed PEM block');
  }
  if (FOREIGN_PEM_LABELS.includes(label)) throw unsupported('only Ed25519 keys are supported');
  if (label === 'ENCRYPTED PRIVATE KEY') throw new OcsError('key_encrypted', 'the PKCS#8 private key is encrypted');
  const body = lines.slice(1, -1).join('');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) throw malformed('bad base64 in PEM body');
  try {
    return { label, der: base64.decode(body) };
  } catch {
    throw malformed('bad base64 in PEM body');
  }
}

function publicFromPem(text: string): Ed25519PublicKey {
  const { label, der } = readPem(text);
  if (label === 'PUBLIC KEY') return Ed25519PublicKey.fromBytes(publicFromSpki(der));
  zeroize(der);
  if (label.includes('PRIVATE KEY')) throw expectedPublic();
  throw unsupported('expected a PUBLIC KEY or an OpenSSH public key');
}

function privateFromPem(text: string): Ed25519PrivateKey {
  const { label, der } = readPem(text);
  try {
    if (label === 'PRIVATE KEY') {
      const { seed, publicKey } = seedFromPkcs8(der);
      return withPublicCheck(fromTemporarySeed(seed), publicKey);
    }
    if (label === 'OPENSSH PRIVATE KEY') {
      const { seed, publicKey } = parseOpenSshPrivateKey(der);
      return withPublicCheck(fromTemporarySeed(seed), publicKey);
    }
    if (label === 'PUBLIC KEY') throw expectedPrivate();
    throw unsupported('expected a PRIVATE KEY or OPENSSH PRIVATE KEY');
  } finally {
    zeroize(der);
  }
}

interface Tlv {
  tag: number;
  body: Uint8Array;
  end: number;
}

/** One DER TLV at `pos`. Definite, minimal lengths only (DER); keys never need more than 2 length bytes. */
function tlv(buf: Uint8Array, pos: number, expectedTag?: number): Tlv {
  const tag = buf[pos];
  let len = buf[pos + 1];
  if (tag === undefined || len === undefined) throw malformed('truncated DER');
  if (expectedTag !== undefined && tag !== expectedTag) throw malformed('unexpected DER structure');
  let start = pos + 2;
  if (len === 0x81) {
    len = buf[start++] ?? 0;
    if (len < 0x80) throw malformed('non-minimal DER length');
  } else if (len === 0x82) {
    len = ((buf[start] ?? 0) << 8) | (buf[start + 1] ?? 0);
    start += 2;
    if (len < 0x100) throw malformed('non-minimal DER length');
  } else if (len >= 0x80) {
    throw malformed('unsupported DER length');
  }
  if (start + len > buf.length) throw malformed('truncated DER');
  return { tag, body: buf.subarray(start, start + len), end: start + len };
}

/** The AlgorithmIdentifier of an SPKI or PKCS#8: Ed25519 with absent parameters (RFC 8410 §3), or refused. */
function checkAlgorithm(algorithm: Tlv): void {
  const oid = tlv(algorithm.body, 0, 0x06);
  if (!timingSafeEqual(oid.body, ED25519_OID)) throw unsupported('only Ed25519 keys are supported');
  if (oid.end !== algorithm.body.length) throw malformed('Ed25519 algorithm parameters must be absent');
}

/** SubjectPublicKeyInfo (RFC 5280 §4.1, RFC 8410 §4). */
function publicFromSpki(der: Uint8Array): Uint8Array {
  const spki = tlv(der, 0, 0x30);
  if (spki.end !== der.length) throw malformed('trailing bytes after the public key');
  const algorithm = tlv(spki.body, 0, 0x30);
  checkAlgorithm(algorithm);
  const bits = tlv(spki.body, algorithm.end, 0x03);
  if (bits.end !== spki.body.length || bits.body.length !== 33 || bits.body[0] !== 0) {
    throw malformed('an Ed25519 public key must be 32 bytes');
  }
  return bits.body.slice(1);
}

/**
 * OneAsymmetricKey (RFC 5958): version 0, or version 1 with the public key attached.
 * Returns a fresh seed the caller owns.
 */
function seedFromPkcs8(der: Uint8Array): { seed: Uint8Array; publicKey: Uint8Array | undefined } {
  const info = tlv(der, 0, 0x30);
  if (info.end !== der.length) throw malformed('trailing bytes after the private key');
  const version = tlv(info.body, 0, 0x02);
  const v = version.body.length === 1 ? version.body[0] : undefined;
  if (v !== 0 && v !== 1) throw malformed('unknown PKCS#8 version');
  const algorithm = tlv(info.body, version.end, 0x30);
  checkAlgorithm(algorithm);
  const privateKey = tlv(info.body, algorithm.end, 0x04);
  // CurvePrivateKey: the seed, itself wrapped in an OCTET STRING.
  const curvePrivateKey = tlv(privateKey.body, 0, 0x04);
  if (curvePrivateKey.end !== privateKey.body.length || curvePrivateKey.body.length !== 32) {
    throw malformed('an Ed25519 private key must be 32 bytes');
  }
  let pos = privateKey.end;
  let publicKey: Uint8Array | undefined;
  if (pos < info.body.length && info.body[pos] === 0xa0) pos = tlv(info.body, pos).end; // attributes
  if (pos < info.body.length && info.body[pos] === 0x81) {
    const bits = tlv(info.body, pos);
    if (v !== 1 || bits.body.length !== 33 || bits.body[0] !== 0) throw malformed('bad public key in PKCS#8');
    publicKey = bits.body.slice(1);
    pos = bits.end;
  }
  if (pos !== info.body.length) throw malformed('unexpected fields in PKCS#8');
  return { seed: curvePrivateKey.body.slice(), publicKey };
}
