/**
 * Bearer tokens (design requirement 2): every API call carries a short-lived JWT from a configured
 * issuer, signed with an asymmetric key from that issuer's JWKS, naming this node or its cluster as
 * audience, and listing the caller's organization and roles.
 *
 * jose does the cryptography; this module is the policy around it. Every refusal is an OcsError
 * with its own code, so the audit log tells the attacks apart, and every message is a fixed string:
 * nothing read from the token is echoed, so no log line can carry one.
 */
import {
  SignJWT,
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  type KeyObject,
} from 'jose';
import { OcsError, type ErrorCode } from './errors.js';

/** The roles a token may grant. Anything else in a token's `roles` claim is ignored. */
export const ROLES = ['farmer', 'spaces', 'monitor', 'storage', 'containers', 'vms'] as const;
export type Role = (typeof ROLES)[number];

/**
 * Signature algorithms a token may use: asymmetric only. With an HMAC algorithm anyone holding the
 * issuer's *public* key could mint tokens, so HS* (and `none`) are refused before any key lookup.
 */
export const TOKEN_ALGORITHMS = ['EdDSA', 'Ed25519', 'ES256', 'ES384', 'RS256', 'PS256'] as const;
export type TokenAlgorithm = (typeof TOKEN_ALGORITHMS)[number];

/**
 * The longest token lifetime any node accepts: the product promises that a token dies within
 * 15 minutes (requirement 2). A policy may ask for less, never for more.
 */
export const MAX_TOKEN_LIFETIME_SECONDS = 900;
export const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = MAX_TOKEN_LIFETIME_SECONDS;
export const DEFAULT_CLOCK_TOLERANCE_SECONDS = 30;

/**
 * The `typ` header a token must carry unless its issuer is configured otherwise: RFC 9068's
 * access-token type. Explicit typing (RFC 8725 section 3.11) keeps an ID token or a logout token
 * of the same identity provider, signed with the same key, from passing as an access token here.
 * Compared as a media type: case-insensitive, `application/` optional (RFC 7515 section 4.1.9).
 */
export const DEFAULT_TOKEN_TYPE = 'at+jwt';
// A media type's subtype, optionally with its `application/` prefix; nothing else is a token type.
const TOKEN_TYPE_RE = /^(?:application\/)?[A-Za-z0-9][A-Za-z0-9.+-]{0,62}$/;

/** A trusted issuer and where its public keys come from. */
export interface IssuerConfig {
  /** Exact `iss` value of its tokens. */
  issuer: string;
  /**
   * A JWKS from configuration (the token's `kid` picks the key, so several keys allow rotation),
   * or a resolver such as jose's `createRemoteJWKSet` when the daemon fetches keys itself.
   */
  keys: JWTVerifyGetKey | JSONWebKeySet;
  /** Narrows {@link TOKEN_ALGORITHMS} for this issuer. */
  algorithms?: TokenAlgorithm[];
  /** The `typ` header its tokens must carry; default {@link DEFAULT_TOKEN_TYPE}. */
  tokenType?: string;
}

export interface TokenPolicy {
  issuers: IssuerConfig[];
  /** This node's id and/or its cluster name; a token's `aud` must name one of them. */
  audiences: string[];
  /** Longest accepted `exp - iat`, in seconds. Default and ceiling 900 (15 minutes). */
  maxLifetimeSeconds?: number;
  /** Leeway for clocks that disagree, applied to `exp`, `nbf` and `iat`. Default 30 s. */
  clockToleranceSeconds?: number;
}

/** Who called, as proven by a verified token. */
export interface Principal {
  subject: string;
  issuer: string;
  org: string;
  roles: ReadonlySet<Role>;
  issuedAt: Date;
  expiresAt: Date;
  tokenId?: string;
}

export interface VerifyTokenOptions {
  /** The verifier's clock; defaults to the current time. */
  now?: Date;
}

// A JWT in a header has no business being larger; refusing early bounds the work done for garbage.
const MAX_TOKEN_LENGTH = 8192;
// JWS compact serialization. The signature may be empty so that `alg: none` reaches the alg check.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function refuse(code: ErrorCode, message: string, details?: Record<string, unknown>): OcsError {
  return new OcsError(code, message, details);
}

function isTokenAlgorithm(alg: unknown): alg is TokenAlgorithm {
  return typeof alg === 'string' && (TOKEN_ALGORITHMS as readonly string[]).includes(alg);
}

function isRole(role: string): role is Role {
  return (ROLES as readonly string[]).includes(role);
}

interface Trusted {
  issuer: string;
  getKey: JWTVerifyGetKey;
  algorithms: TokenAlgorithm[];
  tokenType: string;
}

/**
 * Builds the verifier for a policy. Configuration mistakes (no audience, an HMAC algorithm, a
 * malformed JWKS, a duplicate issuer) throw here, at start-up, not on the first request.
 *
 * The returned function resolves to the caller's {@link Principal} or rejects with an OcsError:
 * token_missing, token_malformed, token_algorithm_refused, token_issuer_unknown, token_key_unknown,
 * token_signature_invalid, token_type_invalid, token_audience_invalid, token_expired,
 * token_not_yet_valid, token_lifetime_too_long, token_claims_invalid (and `unavailable` when the
 * issuer's keys cannot be had).
 */
export function createTokenVerifier(
  policy: TokenPolicy,
): (token: string | undefined, opts?: VerifyTokenOptions) => Promise<Principal> {
  const maxLifetime = policy.maxLifetimeSeconds ?? DEFAULT_MAX_TOKEN_LIFETIME_SECONDS;
  const tolerance = policy.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
  if (!(maxLifetime > 0 && maxLifetime <= MAX_TOKEN_LIFETIME_SECONDS))
    throw new TypeError(`maxLifetimeSeconds must be 1 to ${MAX_TOKEN_LIFETIME_SECONDS}`);
  if (!(tolerance >= 0)) throw new TypeError('clockToleranceSeconds must not be negative');
  const audiences = [...policy.audiences];
  if (audiences.length === 0 || audiences.some((a) => typeof a !== 'string' || a === '')) {
    throw new TypeError('a token policy needs at least one non-empty audience');
  }
  const trusted = new Map<string, Trusted>();
  for (const cfg of policy.issuers) {
    if (typeof cfg.issuer !== 'string' || cfg.issuer === '') throw new TypeError('issuer must be a non-empty string');
    if (trusted.has(cfg.issuer)) throw new TypeError(`issuer ${cfg.issuer} is configured twice`);
    // Configuration may come from JSON, so the allow-list is enforced at run time too.
    const algorithms = cfg.algorithms ?? [...TOKEN_ALGORITHMS];
    for (const alg of algorithms) {
      if (!isTokenAlgorithm(alg)) throw new TypeError(`issuer ${cfg.issuer}: algorithm ${String(alg)} is not allowed`);
    }
    const tokenType = cfg.tokenType ?? DEFAULT_TOKEN_TYPE;
    if (typeof tokenType !== 'string' || !TOKEN_TYPE_RE.test(tokenType))
      throw new TypeError(`issuer ${cfg.issuer}: tokenType must be a media type such as ${DEFAULT_TOKEN_TYPE}`);
    const getKey = typeof cfg.keys === 'function' ? cfg.keys : createLocalJWKSet(cfg.keys);
    trusted.set(cfg.issuer, { issuer: cfg.issuer, getKey, algorithms, tokenType });
  }

  return async (token, opts = {}) => {
    if (token === undefined || token === '') throw refuse('token_missing', 'a bearer token is required');
    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) {
      throw refuse('token_malformed', 'the token is not a compact JWS');
    }

    // Everything before jwtVerify reads *unverified* data, only to decide how to verify.
    const alg = decodeUnverified(() => decodeProtectedHeader(token).alg);
    // Refused before any key is touched: no key lookup, no HMAC with a public key as secret.
    if (!isTokenAlgorithm(alg)) throw refuse('token_algorithm_refused', 'the token algorithm is not allowed');
    const claimedIssuer = decodeUnverified(() => decodeJwt(token).iss);
    const issuer = typeof claimedIssuer === 'string' ? trusted.get(claimedIssuer) : undefined;
    if (!issuer) throw refuse('token_issuer_unknown', 'the token issuer is not trusted');
    if (!issuer.algorithms.includes(alg)) {
      throw refuse('token_algorithm_refused', 'the token algorithm is not allowed for its issuer');
    }

    const now = opts.now ?? new Date();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, issuer.getKey, {
        algorithms: issuer.algorithms,
        typ: issuer.tokenType,
        issuer: issuer.issuer,
        audience: audiences,
        clockTolerance: tolerance,
        currentDate: now,
      }));
    } catch (err) {
      throw fromJose(err);
    }
    return principalOf(payload, issuer.issuer, now.getTime() / 1000, maxLifetime, tolerance);
  };
}

function decodeUnverified<T>(decode: () => T): T {
  try {
    return decode();
  } catch {
    throw refuse('token_malformed', 'the token header or payload cannot be decoded');
  }
}

/** The checks jose leaves to us, on the verified payload. */
function principalOf(p: JWTPayload, issuer: string, now: number, maxLifetime: number, tolerance: number): Principal {
  const { iat, exp } = p;
  if (typeof iat !== 'number' || !Number.isFinite(iat))
    throw refuse('token_claims_invalid', 'the token needs an iat claim');
  if (typeof exp !== 'number' || !Number.isFinite(exp))
    throw refuse('token_claims_invalid', 'the token needs an exp claim');
  if (iat > now + tolerance) throw refuse('token_not_yet_valid', 'the token is issued in the future');
  // Short lifetimes are the point (requirement 7): a stolen token must die soon by itself.
  if (exp - iat > maxLifetime) {
    throw refuse('token_lifetime_too_long', 'the token lives longer than this node accepts', {
      maxLifetimeSeconds: maxLifetime,
    });
  }
  if (typeof p.sub !== 'string' || p.sub === '') throw refuse('token_claims_invalid', 'the token needs a sub claim');
  if (typeof p.org !== 'string' || p.org === '') throw refuse('token_claims_invalid', 'the token needs an org claim');
  const claimed = p.roles;
  if (!Array.isArray(claimed) || !claimed.every((r): r is string => typeof r === 'string')) {
    throw refuse('token_claims_invalid', 'the roles claim must be an array of strings');
  }
  // Roles of other services may share the token; only ours count, and at least one must.
  const roles = new Set(claimed.filter(isRole));
  if (roles.size === 0) throw refuse('token_claims_invalid', 'the token grants no role known here');
  return {
    subject: p.sub,
    issuer,
    org: p.org,
    roles,
    issuedAt: new Date(iat * 1000),
    expiresAt: new Date(exp * 1000),
    ...(typeof p.jti === 'string' && p.jti !== '' ? { tokenId: p.jti } : {}),
  };
}

/** Maps jose's failures to our codes; nothing raw escapes (its messages are not ours to promise). */
function fromJose(err: unknown): OcsError {
  if (err instanceof OcsError) return err;
  if (err instanceof errors.JWTExpired) return refuse('token_expired', 'the token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'typ':
        return refuse('token_type_invalid', 'the token is not of the type this node accepts from its issuer');
      case 'aud':
        return refuse('token_audience_invalid', 'the token is not meant for this node');
      case 'iss':
        return refuse('token_issuer_unknown', 'the token issuer is not trusted');
      case 'nbf':
        if (err.reason === 'check_failed') return refuse('token_not_yet_valid', 'the token is not valid yet');
        break;
    }
    return refuse('token_claims_invalid', 'a token claim is invalid', { claim: err.claim });
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return refuse('token_signature_invalid', 'the token signature does not verify');
  }
  // Several keys match when a token has no kid and the issuer has rotated: the kid is what picks one.
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return refuse('token_key_unknown', 'no key of the issuer matches the token');
  }
  if (err instanceof errors.JOSEAlgNotAllowed)
    return refuse('token_algorithm_refused', 'the token algorithm is not allowed');
  // Our side failed, not the caller: a remote JWKS did not answer in time.
  if (err instanceof errors.JWKSTimeout) return refuse('unavailable', 'the issuer keys could not be fetched');
  return refuse('token_malformed', 'the token cannot be verified');
}

/**
 * The token from an `Authorization: Bearer <token>` header (RFC 6750, scheme case-insensitive).
 * Throws token_missing without a header or token, token_malformed for another scheme or shape.
 */
export function bearerToken(header: string | undefined): string {
  if (header === undefined || header.trim() === '') throw refuse('token_missing', 'a bearer token is required');
  const m = /^Bearer(?: +([A-Za-z0-9\-._~+/]+=*))? *$/i.exec(header);
  if (!m) throw refuse('token_malformed', 'the authorization header is not a bearer token');
  if (m[1] === undefined) throw refuse('token_missing', 'a bearer token is required');
  return m[1];
}

/** Throws role_missing unless the principal holds at least one of `anyOf` (none given: refuses). */
export function requireRole(principal: Principal, ...anyOf: Role[]): void {
  if (anyOf.some((role) => principal.roles.has(role))) return;
  throw refuse('role_missing', `this call needs one of the roles: ${anyOf.join(', ')}`, { anyOf });
}

export interface MintTokenOptions {
  /** The issuer's private key (Node KeyObject, WebCrypto CryptoKey or private JWK). */
  privateKey: CryptoKey | KeyObject | JWK;
  kid: string;
  alg: TokenAlgorithm;
  issuer: string;
  audience: string | string[];
  subject: string;
  org: string;
  roles: Role[];
  /** Default 300 s; keep it within the verifiers' maximum or they refuse the token. */
  lifetimeSeconds?: number;
  now?: Date;
  /** Optional `jti`, for audit correlation. */
  tokenId?: string;
  /** The `typ` header; default {@link DEFAULT_TOKEN_TYPE}, which the verifiers expect by default. */
  typ?: string;
}

/** Signs a token for the development issuer and the `ocs` client. */
export async function mintToken(opts: MintTokenOptions): Promise<string> {
  const lifetime = opts.lifetimeSeconds ?? 300;
  if (!Number.isInteger(lifetime) || lifetime <= 0) throw new TypeError('lifetimeSeconds must be a positive integer');
  if (!isTokenAlgorithm(opts.alg)) throw new TypeError('alg is not an allowed token algorithm');
  const iat = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  const jwt = new SignJWT({ org: opts.org, roles: [...opts.roles] })
    .setProtectedHeader({ alg: opts.alg, kid: opts.kid, typ: opts.typ ?? DEFAULT_TOKEN_TYPE })
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setSubject(opts.subject)
    .setIssuedAt(iat)
    .setExpirationTime(iat + lifetime);
  if (opts.tokenId !== undefined) jwt.setJti(opts.tokenId);
  return jwt.sign(opts.privateKey);
}

/**
 * A development node's own issuer, named here so that the daemon and `ocs token` (on the same
 * machine, root) agree: its name, its key id, and where the node keeps its private key.
 */
export const devIssuer = {
  name: (nodeId: string) => `ocs-dev:${nodeId}`,
  /** From the base64url `x` of its Ed25519 public key. */
  kid: (x: string) => `dev-${x.slice(0, 12)}`,
  /** Relative to the node's state directory. */
  keyFile: 'keys/dev-issuer.pem',
  nodeIdFile: 'node-id',
} as const;
