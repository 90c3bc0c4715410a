/**
 * Caches verified tokens until they expire. A client sends the same short-lived token with many
 * requests; verifying its signature once instead of every time halves the Ed25519 work of a
 * signed request. A cached token is still refused the moment it expires, and only a token that
 * verified is ever cached, keyed by its exact text. When an issuer's keys change (a key was
 * withdrawn), `clear()` forgets every verdict, so no token outlives the key that signed it.
 */
import { OcsError } from './errors.js';
import type { Principal } from './jwt.js';

export type TokenVerifierFn = (token: string | undefined, opts?: { now?: Date }) => Promise<Principal>;

export type CachedTokenVerifier = TokenVerifierFn & { clear(): void };

export function cacheTokens(
  verify: TokenVerifierFn,
  opts: { maxEntries?: number; now?: () => number } = {},
): CachedTokenVerifier {
  const max = opts.maxEntries ?? 10_000;
  const cache = new Map<string, Principal>();
  const cached: TokenVerifierFn = async (token, o) => {
    const now = o?.now?.getTime() ?? (opts.now ?? Date.now)();
    if (token !== undefined) {
      const hit = cache.get(token);
      if (hit) {
        if (hit.expiresAt.getTime() > now) return hit;
        cache.delete(token);
        throw new OcsError('token_expired', 'the token has expired');
      }
    }
    const principal = await verify(token, o);
    if (token !== undefined) {
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(token, principal);
    }
    return principal;
  };
  return Object.assign(cached, { clear: () => cache.clear() });
}
