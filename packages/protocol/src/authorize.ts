/**
 * The one order in which both servers check a request: token (who, which org, which roles),
 * then the owner's RFC 9421 signature, then the body's Content-Digest. Shared so the daemon and
 * the space API cannot drift apart on what "authorized" means.
 */
import { OcsError } from './errors.js';
import { bearerToken, requireRole, type Principal, type Role } from './jwt.js';
import { verifyContentDigest, type HashFactory } from './digest.js';
import { verifyRequest, type SignableRequest, type VerifiedSignature, type VerifyPolicy } from './signatures.js';

export interface IncomingRequest extends SignableRequest {
  /** The exact body bytes; empty for bodyless requests. Streams check their digest themselves. */
  body?: Uint8Array;
}

export type TokenVerifier = (token: string | undefined) => Promise<Principal>;

export interface AuthorizeOptions {
  verifyToken: TokenVerifier;
  /** Any one of these roles; empty means no token is needed. */
  roles: readonly Role[];
  /** When set, an RFC 9421 signature is required and checked with this policy. */
  signature?: VerifyPolicy;
  hashes?: HashFactory;
}

export interface Authorized {
  principal: Principal | undefined;
  signature: VerifiedSignature | undefined;
}

export async function authorize(req: IncomingRequest, opts: AuthorizeOptions): Promise<Authorized> {
  let principal: Principal | undefined;
  if (opts.roles.length > 0) {
    principal = await opts.verifyToken(bearerToken(headerOf(req, 'authorization')));
    requireRole(principal, ...opts.roles);
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

function headerOf(req: SignableRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OcsError('invalid_request', `header ${name} given more than once`);
  return v;
}
