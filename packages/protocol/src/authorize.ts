/**
 * The one order in which both servers check a request: header fields that may appear once,
 * then the token (who, which org, which roles), then the owner's RFC 9421 signature, then the
 * body's Content-Digest. Shared so the daemon and the space API cannot drift apart on what
 * "authorized" means. Cheap checks come first: nothing reaches the replay cache before them.
 */
import { OcsError } from './errors.js';
import { bearerToken, requireRole, type Principal, type Role } from './jwt.js';
import { refuseRepeatedHeaders } from './single-headers.js';
import { verifyContentDigest, type HashFactory } from './digest.js';
import { verifyRequest, type SignableRequest, type VerifiedSignature, type VerifyPolicy } from './signatures.js';

export interface IncomingRequest extends SignableRequest {
  /** The exact body bytes; empty for bodyless requests. Streams check their digest themselves. */
  body?: Uint8Array;
  /**
   * The header lines as received (Node's `req.rawHeaders`): `headers` has already dropped a
   * second `Authorization`, and only these show it was there.
   */
  rawHeaders: readonly string[];
}

export type TokenVerifier = (token: string | undefined) => Promise<Principal>;

export interface AuthorizeOptions {
  verifyToken: TokenVerifier;
  /** Any one of these roles; empty means no token is needed. */
  roles: readonly Role[];
  /**
   * The organization the resource belongs to: a token of any other org is refused as
   * `not_found` (the resource is not one it may know exists), whatever its roles.
   */
  org?: string;
  /** When set, an RFC 9421 signature is required and checked with this policy. */
  signature?: VerifyPolicy;
  hashes?: HashFactory;
}

export interface Authorized {
  principal: Principal | undefined;
  signature: VerifiedSignature | undefined;
}

export async function authorize(req: IncomingRequest, opts: AuthorizeOptions): Promise<Authorized> {
  refuseRepeatedHeaders(req.rawHeaders);
  let principal: Principal | undefined;
  if (opts.roles.length > 0 || opts.org !== undefined) {
    principal = await opts.verifyToken(bearerToken(headerOf(req, 'authorization')));
    if (opts.roles.length > 0) requireRole(principal, ...opts.roles);
    if (opts.org !== undefined) requireOrg(principal, opts.org);
  }
  let signature: VerifiedSignature | undefined;
  if (opts.signature) {
    signature = await verifyRequest(req, opts.signature);
    if (req.body && req.body.length > 0) {
      verifyContentDigest(headerOf(req, 'content-digest'), req.body, opts.hashes);
    }
  }
  return { principal, signature };
}

/** Throws not_found unless the principal belongs to `org`: other orgs never learn a resource exists. */
export function requireOrg(principal: Principal, org: string): void {
  if (principal.org !== org) throw new OcsError('not_found', 'no such space');
}

function headerOf(req: SignableRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OcsError('invalid_request', `header ${name} given more than once`);
  return v;
}
