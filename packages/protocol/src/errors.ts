/**
 * The one catalogue of refusal codes shared by the node daemon, the space API and the client.
 *
 * A code is a stable string: clients branch on it, docs list it, and a test keeps
 * `docs/errors.md` and this table in step. Messages are written for humans and must never
 * carry a secret (token, signature, key, plaintext path of a key file).
 */

/** HTTP status for every code. Adding a code means adding a row here (the compiler insists). */
export const ERROR_STATUS = {
  // Request shape
  invalid_request: 400,
  body_too_large: 413,
  headers_too_large: 431,
  unsupported_media_type: 415,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  misdirected_request: 421,
  rate_limited: 429,

  // Tokens (JWT)
  token_missing: 401,
  token_malformed: 401,
  token_algorithm_refused: 401,
  token_signature_invalid: 401,
  token_issuer_unknown: 401,
  token_key_unknown: 401,
  token_type_invalid: 401,
  token_audience_invalid: 401,
  token_expired: 401,
  token_not_yet_valid: 401,
  token_lifetime_too_long: 401,
  token_claims_invalid: 401,
  role_missing: 403,

  // Signed requests (RFC 9421 / RFC 9530)
  signature_missing: 401,
  signature_malformed: 401,
  signature_algorithm_refused: 401,
  signature_components_missing: 401,
  signature_invalid: 401,
  signature_expired: 401,
  signature_not_yet_valid: 401,
  signature_key_unknown: 401,
  replayed: 401,
  digest_missing: 400,
  digest_malformed: 400,
  digest_mismatch: 400,

  // Keys and wrapping
  key_malformed: 400,
  key_unsupported: 400,
  key_encrypted: 400,
  unwrap_failed: 400,

  // Space archives (backup, restore, move)
  archive_malformed: 400,
  archive_version: 400,
  archive_corrupt: 400,
  archive_signature_invalid: 400,
  /** The image inside fails the node's filesystem check (a crafted or damaged image). */
  archive_filesystem_invalid: 400,
  /** A well-formed archive this node cannot take: another storage backend. */
  archive_backend: 422,
  /** The space moved to another node: the details are its tombstone (where, signed by this node). */
  space_moved: 410,
  /** A move stopped before its commit: the space is back, locked, on the node it was to leave. */
  move_aborted: 409,
  /** A delegation that does not verify, names another space or owner, or has expired. */
  delegation_invalid: 403,
  /** The space's delegation does not name this node or this key. */
  not_delegated: 403,
  /** The node is being drained (retired): it takes no new space. */
  node_draining: 409,

  // Ownership and resources
  not_owner: 403,
  egress_refused: 403,
  capacity_exceeded: 409,
  budget_exceeded: 409,
  space_locked: 409,
  space_unlocked: 409,
  lease_expired: 410,
  unavailable: 503,
  host_failed: 502,
  internal: 500,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_STATUS;

export const ERROR_CODES = Object.keys(ERROR_STATUS) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_STATUS, value);
}

export function statusOf(code: ErrorCode): number {
  return ERROR_STATUS[code];
}

/** The JSON body of every refusal, on both APIs. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

/**
 * An expected refusal: safe to show to the caller. Anything that is not an OcsError becomes
 * `internal` with a generic message at the HTTP edge; its detail goes to the log only.
 */
export class OcsError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Non-secret, machine-readable context (e.g. which field, which component was missing). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'OcsError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = details;
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { error: { code: this.code, message: this.message } }
      : { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export function isOcsError(err: unknown): err is OcsError {
  return err instanceof OcsError;
}

/** For exhaustive switches: the compiler proves this is unreachable. */
export function assertNever(value: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${String(value)}`);
}

/**
 * A write refused for want of room: ENOSPC (a full filesystem, the fscrypt image) or EDQUOT (a
 * ZFS dataset at its quota). Node 20's libuv has no name for EDQUOT and reports it as
 * `UNKNOWN` with errno -122, so the number is checked too (seen in the production guest).
 */
export function isOutOfSpace(err: unknown): boolean {
  const e = err as { code?: unknown; errno?: unknown } | null;
  // -122 is Linux's EDQUOT; the node runs on Linux only.
  return e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || e?.errno === -122;
}
