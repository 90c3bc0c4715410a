/**
 * RFC 9421 HTTP Message Signatures, `ed25519` only, for requests.
 *
 * Only what our APIs need, and refusing the rest: derived components @method, @target-uri,
 * @authority, @scheme, @request-target, @path and @query, plus plain header fields. Component
 * parameters (`sf`, `bs`, `key`, `req`, `tr`) and other algorithms are refused rather than
 * half-supported, so a verifier can never be talked into a weaker reading of a request.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { base64url } from '@scure/base';
import {
  parseDictionary,
  serializeDictionary,
  serializeInnerList,
  type Dictionary,
  type InnerList,
  type Item,
  type Parameters,
} from 'structured-headers';
import { OcsError } from './errors.js';
import { utf8 } from './internal/bytes.js';
import type { NonceStore } from './replay-cache.js';

/** A request as both ends see it. `url` is the absolute target URI: scheme://authority/path?query. */
export interface SignableRequest {
  method: string;
  url: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

export type Ed25519Signer = (message: Uint8Array) => Uint8Array | Promise<Uint8Array>;
export type Ed25519Verifier = (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => boolean;

/** Pure-JS verification (browsers, CLI). Servers inject node:crypto's, which is several times faster. */
export const nobleVerify: Ed25519Verifier = (signature, message, publicKey) => {
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
};

export const DERIVED_COMPONENTS = [
  '@method',
  '@target-uri',
  '@authority',
  '@scheme',
  '@request-target',
  '@path',
  '@query',
] as const;

/** The components every signed request to our APIs must cover (plus the conditional ones below). */
export const REQUIRED_COMPONENTS = ['@method', '@target-uri'] as const;

/**
 * The header naming the node a request is for: the SHA-256 fingerprint of the node's TLS
 * certificate (`AB:CD:…`, as `GET /v1/node` shows it), the one identity a client has checked
 * itself (it pinned it, and the handshake proved the node holds its key). Names and addresses
 * in `@target-uri` are shared by nodes (`localhost:8443`, a bridge's gateway, a cloud image's
 * hostname); a node cannot claim another node's certificate, so a request signed for one node
 * is refused by every other, a node that would relay what it was sent included.
 */
export const NODE_HEADER = 'ocs-node';

/**
 * The header binding a restore's signed request to the archive it carries: the SHA-256 of the
 * archive's head frame (`sha-256=:…:`, as a Content-Digest is written). The head names its owner,
 * whose signature over head and tail covers every chunk's digest, so the request needs no digest
 * of its whole body, which would be a second pass over every byte on both ends.
 */
export const ARCHIVE_HEAD_HEADER = 'ocs-archive-head';

/** Application tag in every signature we make and accept: a signature for another protocol can't be replayed here. */
export const SIGNATURE_TAG = 'ocs-v1';

export interface SignOptions {
  keyId: string;
  sign: Ed25519Signer;
  /** Defaults: @method, @target-uri, and content-digest / authorization when the request has them. */
  components?: readonly string[];
  label?: string;
  /** Unix seconds. */
  created?: number;
  /** Seconds the signature stays valid; short on purpose. */
  expiresIn?: number;
  nonce?: string;
  tag?: string | null;
}

export interface SignatureHeaders {
  'signature-input': string;
  signature: string;
}

interface ParsedTarget {
  scheme: string;
  authority: string;
  path: string;
  query: string;
}

// A hand parse rather than WHATWG URL: URL normalizes dot segments and percent-encoding, and
// the signature must cover the path exactly as it was sent.
const TARGET_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#\s]+)([^?#\s]*)(\?[^#\s]*)?$/;

function parseTarget(url: string): ParsedTarget {
  const m = TARGET_RE.exec(url);
  if (!m) throw new OcsError('invalid_request', 'the request target is not an absolute URI');
  const scheme = m[1]!.toLowerCase();
  let authority = m[2]!.toLowerCase();
  if ((scheme === 'https' && authority.endsWith(':443')) || (scheme === 'http' && authority.endsWith(':80'))) {
    authority = authority.slice(0, authority.lastIndexOf(':'));
  }
  return { scheme, authority, path: m[3] || '/', query: m[4] ?? '' };
}

function headerValue(req: SignableRequest, name: string): string | undefined {
  let raw: string | readonly string[] | undefined;
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.toLowerCase() === name) {
      raw = v;
      break;
    }
  }
  if (raw === undefined) return undefined;
  const values = typeof raw === 'string' ? [raw] : raw;
  // RFC 9421 §2.1: trim each value, fold obsolete line folding, join multiple field lines.
  return values.map((v) => v.replace(/\r?\n[ \t]+/g, ' ').trim()).join(', ');
}

function componentValue(req: SignableRequest, target: ParsedTarget, name: string): string | undefined {
  switch (name) {
    case '@method':
      return req.method.toUpperCase();
    case '@target-uri':
      return `${target.scheme}://${target.authority}${target.path}${target.query}`;
    case '@authority':
      return target.authority;
    case '@scheme':
      return target.scheme;
    case '@request-target':
      return `${target.path}${target.query}`;
    case '@path':
      return target.path;
    case '@query':
      return target.query === '' ? '?' : target.query;
    default:
      if (name.startsWith('@')) return undefined;
      return headerValue(req, name);
  }
}

function hasBody(req: SignableRequest): boolean {
  const length = headerValue(req, 'content-length');
  if (length !== undefined && length !== '0') return true;
  return headerValue(req, 'transfer-encoding') !== undefined;
}

/** The exact bytes that are signed (RFC 9421 §2.5). Throws if a covered component is absent. */
export function signatureBase(req: SignableRequest, components: readonly string[], params: Parameters): string {
  const target = parseTarget(req.url);
  const lines: string[] = [];
  for (const name of components) {
    const value = componentValue(req, target, name);
    if (value === undefined) {
      throw new OcsError('signature_invalid', 'a covered component is absent from the request', {
        component: name,
      });
    }
    lines.push(`"${name}": ${value}`);
  }
  const list: InnerList = [components.map((c): Item => [c, new Map()]), params];
  lines.push(`"@signature-params": ${serializeInnerList(list)}`);
  return lines.join('\n');
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Signs a request; returns the two headers to add. */
export async function signRequest(req: SignableRequest, opts: SignOptions): Promise<SignatureHeaders> {
  const label = opts.label ?? 'sig1';
  const components = opts.components ?? [
    ...REQUIRED_COMPONENTS,
    ...(headerValue(req, 'content-digest') !== undefined ? ['content-digest'] : []),
    ...(headerValue(req, 'authorization') !== undefined ? ['authorization'] : []),
    ...(headerValue(req, 'idempotency-key') !== undefined ? ['idempotency-key'] : []),
    ...(headerValue(req, NODE_HEADER) !== undefined ? [NODE_HEADER] : []),
    ...(headerValue(req, ARCHIVE_HEAD_HEADER) !== undefined ? [ARCHIVE_HEAD_HEADER] : []),
  ];
  const created = opts.created ?? nowSeconds();
  const params: Parameters = new Map();
  params.set('created', created);
  params.set('expires', created + (opts.expiresIn ?? 60));
  params.set('nonce', opts.nonce ?? base64url.encode(randomBytes(16)).replace(/=+$/, ''));
  params.set('alg', 'ed25519');
  params.set('keyid', opts.keyId);
  const tag = opts.tag === undefined ? SIGNATURE_TAG : opts.tag;
  if (tag !== null) params.set('tag', tag);

  const base = signatureBase(req, components, params);
  const signature = await opts.sign(utf8(base));
  const input: InnerList = [components.map((c): Item => [c, new Map()]), params];
  return {
    'signature-input': serializeDictionary(new Map([[label, input]]) as Dictionary),
    signature: serializeDictionary(new Map([[label, [signature, new Map()]]]) as Dictionary),
  };
}

export interface VerifyPolicy {
  /** The public key for a keyid, or undefined. May throw an OcsError (e.g. `not_owner`). */
  resolveKey(keyId: string): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  verify?: Ed25519Verifier;
  /** Unix seconds; injected so tests can freeze time. */
  now?: () => number;
  /** Which signature label to check; by default the first in Signature-Input. */
  label?: string;
  /** Default: REQUIRED_COMPONENTS. */
  requiredComponents?: readonly string[];
  /** Oldest acceptable `created`, in seconds before now. */
  maxAgeSeconds?: number;
  /** Longest acceptable `expires - created`. */
  maxValiditySeconds?: number;
  clockSkewSeconds?: number;
  /** Without a nonce store, replay protection is off: only for tests of the parts below it. */
  nonceStore?: NonceStore;
  /**
   * Whose share of the replay cache the nonce counts against; default the signature's keyid.
   * A route where anyone may bring a new key (proof of possession) charges the token's principal.
   */
  noncePartition?: string;
  /** Required `tag`; null accepts any (or none). Default SIGNATURE_TAG. */
  tag?: string | null;
  /** Strict by default; only interop tests with foreign signers (e.g. the RFC's examples) relax these. */
  requireExpires?: boolean;
  requireNonce?: boolean;
  /** A request with a body must cover content-digest (default true). */
  requireDigestCoverage?: boolean;
  /**
   * This node's certificate fingerprint: the request must carry it in the signed `ocs-node`
   * field, or it was signed for another node (`misdirected_request`). Unset only where no node
   * is involved (the RFC's own examples, tests of the parts below).
   */
  node?: string;
}

export interface VerifiedSignature {
  label: string;
  keyId: string;
  publicKey: Uint8Array;
  components: string[];
  created: number;
  expires: number | undefined;
  nonce: string | undefined;
}

/** Fingerprints compare without case, colons or a `SHA256:` prefix (the forms the CLI and SDK accept). */
export function sameNode(named: string | undefined, node: string): boolean {
  const norm = (f: string) =>
    f
      .trim()
      .replace(/^SHA256:/i, '')
      .replace(/:/g, '')
      .toUpperCase();
  return named !== undefined && named !== '' && norm(named) === norm(node);
}

function parseHeaderDictionary(value: string, name: string): Dictionary {
  try {
    return parseDictionary(value);
  } catch {
    throw new OcsError('signature_malformed', `${name} is not a structured dictionary`);
  }
}

function intParam(params: Parameters, name: string): number | undefined {
  const v = params.get(name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new OcsError('signature_malformed', `signature parameter ${name} must be an integer`);
  }
  return v;
}

function stringParam(params: Parameters, name: string): string | undefined {
  const v = params.get(name);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OcsError('signature_malformed', `signature parameter ${name} must be a string`);
  return v;
}

/**
 * Verifies one signature on a request. Order matters for the error a caller sees: shape, then
 * algorithm and coverage, then time, then key, then the signature itself, and only a valid
 * signature's nonce enters the replay cache (so forged requests cannot fill it).
 * The body's Content-Digest is checked separately (it may be streamed), but its coverage is
 * required here whenever the request carries a body.
 */
export async function verifyRequest(req: SignableRequest, policy: VerifyPolicy): Promise<VerifiedSignature> {
  const inputHeader = headerValue(req, 'signature-input');
  const sigHeader = headerValue(req, 'signature');
  if (inputHeader === undefined || sigHeader === undefined) {
    throw new OcsError('signature_missing', 'the request carries no Signature and Signature-Input');
  }
  const inputs = parseHeaderDictionary(inputHeader, 'Signature-Input');
  const signatures = parseHeaderDictionary(sigHeader, 'Signature');
  const label = policy.label ?? inputs.keys().next().value;
  if (label === undefined) throw new OcsError('signature_missing', 'Signature-Input lists no signature');
  const input = inputs.get(label);
  const sigMember = signatures.get(label);
  if (input === undefined || sigMember === undefined) {
    throw new OcsError('signature_missing', 'no signature with the expected label', { label });
  }
  if (!Array.isArray(input[0]))
    throw new OcsError('signature_malformed', 'Signature-Input member is not an inner list');
  const sigValue = sigMember[0];
  if (!(sigValue instanceof ArrayBuffer))
    throw new OcsError('signature_malformed', 'Signature member is not a byte sequence');
  const signature = new Uint8Array(sigValue);

  const [items, params] = input as InnerList;
  const alg = stringParam(params, 'alg');
  if (alg !== undefined && alg !== 'ed25519') {
    throw new OcsError('signature_algorithm_refused', 'only ed25519 signatures are accepted', { alg });
  }
  const keyId = stringParam(params, 'keyid');
  const created = intParam(params, 'created');
  const expires = intParam(params, 'expires');
  const nonce = stringParam(params, 'nonce');
  const tag = stringParam(params, 'tag');
  if (keyId === undefined || created === undefined) {
    throw new OcsError('signature_malformed', 'signature parameters keyid and created are required');
  }

  const components: string[] = [];
  for (const [name, componentParams] of items) {
    if (typeof name !== 'string' || name !== name.toLowerCase()) {
      throw new OcsError('signature_malformed', 'component identifiers are lowercase strings');
    }
    if (componentParams.size > 0) {
      throw new OcsError('signature_malformed', 'component parameters are not supported', { component: name });
    }
    if (name.startsWith('@') && !(DERIVED_COMPONENTS as readonly string[]).includes(name)) {
      throw new OcsError('signature_malformed', 'unsupported derived component', { component: name });
    }
    if (components.includes(name))
      throw new OcsError('signature_malformed', 'a component is listed twice', { component: name });
    components.push(name);
  }
  const required = new Set<string>(policy.requiredComponents ?? REQUIRED_COMPONENTS);
  if (headerValue(req, 'authorization') !== undefined) required.add('authorization');
  // The key decides which stored answer a request gets: a relay must not add, strip or change it.
  if (headerValue(req, 'idempotency-key') !== undefined) required.add('idempotency-key');
  // What a restore's body is bound by, instead of a Content-Digest (see space-archive.ts).
  if (headerValue(req, ARCHIVE_HEAD_HEADER) !== undefined) required.add(ARCHIVE_HEAD_HEADER);
  if ((policy.requireDigestCoverage ?? true) && hasBody(req)) required.add('content-digest');
  if (policy.node !== undefined) required.add(NODE_HEADER);
  const missing = [...required].filter((c) => !components.includes(c));
  if (missing.length > 0) {
    throw new OcsError('signature_components_missing', 'the signature does not cover required components', { missing });
  }
  if (policy.node !== undefined && !sameNode(headerValue(req, NODE_HEADER), policy.node)) {
    throw new OcsError('misdirected_request', 'the request was signed for another node', { header: NODE_HEADER });
  }

  const wantTag = policy.tag === undefined ? SIGNATURE_TAG : policy.tag;
  if (wantTag !== null && tag !== wantTag) {
    throw new OcsError('signature_malformed', 'the signature is not tagged for this protocol', { expected: wantTag });
  }
  if (expires === undefined && (policy.requireExpires ?? true)) {
    throw new OcsError('signature_malformed', 'signature parameter expires is required');
  }
  if (nonce === undefined ? (policy.requireNonce ?? true) : nonce.length < 8 || nonce.length > 128) {
    throw new OcsError('signature_malformed', 'signature parameter nonce (8 to 128 characters) is required');
  }

  const now = (policy.now ?? nowSeconds)();
  const skew = policy.clockSkewSeconds ?? 30;
  const maxAge = policy.maxAgeSeconds ?? 300;
  const maxValidity = policy.maxValiditySeconds ?? 300;
  if (created > now + skew) throw new OcsError('signature_not_yet_valid', 'the signature was created in the future');
  const until = expires ?? created + maxAge;
  if (until < created) throw new OcsError('signature_malformed', 'the signature expires before it was created');
  if (until + skew < now || created + maxAge + skew < now) {
    throw new OcsError('signature_expired', 'the signature has expired');
  }
  if (until - created > maxValidity) {
    throw new OcsError('signature_malformed', 'the signature is valid for longer than allowed', { maxValidity });
  }

  const publicKey = await policy.resolveKey(keyId);
  if (publicKey === undefined) throw new OcsError('signature_key_unknown', 'the signing key is not known here');

  const base = signatureBase(req, components, params);
  const ok = (policy.verify ?? nobleVerify)(signature, utf8(base), publicKey);
  if (!ok) throw new OcsError('signature_invalid', 'the signature does not verify');

  if (policy.nonceStore && nonce !== undefined) {
    const fresh = await policy.nonceStore.remember(keyId, nonce, until + skew, now, policy.noncePartition ?? keyId);
    if (!fresh) throw new OcsError('replayed', 'this signed request was already used');
  }
  return { label, keyId, publicKey, components, created, expires, nonce };
}
