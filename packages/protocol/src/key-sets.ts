/**
 * An issuer's public keys when they change over time: the JWKS the daemon fetches from an
 * issuer's `jwksUri`, and the copy of it a space process holds (it has no network of its own and
 * asks the daemon instead). Both ends use this one cache, so both follow the same rules:
 *
 * - a set older than `refreshMs` is fetched again before it is used; while that fails, the old
 *   set keeps serving, but never beyond `maxStaleMs` (then tokens get `unavailable`);
 * - a token whose `kid` the set lacks triggers one fetch (rotation), at most one per
 *   `cooldownMs` however many unknown kids arrive, so garbage tokens cannot make us hammer the
 *   issuer; concurrent callers share one fetch;
 * - whatever a fetch returns is cut down to public signing keys; garbage never replaces a good
 *   set, and no fetch failure escapes as anything but an OcsError.
 *
 * No I/O here: `load` is injected.
 */
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import { OcsError } from './errors.js';

/** More keys than any issuer publishes at once, few enough to bound what a fetch costs. */
export const MAX_JWKS_KEYS = 64;
const KEY_TYPES = ['OKP', 'EC', 'RSA'];
// Members only a private or symmetric key has: such a key is never used to verify.
const SECRET_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPublicSigningKey(k: unknown): k is JWK {
  if (!isObject(k) || typeof k.kty !== 'string' || !KEY_TYPES.includes(k.kty)) return false;
  if (SECRET_MEMBERS.some((m) => m in k)) return false;
  if (k.use !== undefined && k.use !== 'sig') return false;
  return k.kid === undefined || typeof k.kid === 'string';
}

/**
 * The public signing keys of a JWKS (RFC 7517), as plain JSON. Throws TypeError for anything
 * that is not a JWKS; drops private, symmetric (`oct`), encryption and unknown-type keys.
 */
export function publicKeySet(value: unknown): JSONWebKeySet {
  if (!isObject(value) || !Array.isArray(value.keys)) throw new TypeError('not a JWKS: no keys array');
  if (value.keys.length > MAX_JWKS_KEYS) throw new TypeError(`a JWKS of more than ${MAX_JWKS_KEYS} keys`);
  // Entries that are not JWKs at all mean the answer is garbage, not a set without usable keys.
  if (!value.keys.every((k) => isObject(k) && typeof k.kty === 'string'))
    throw new TypeError('not a JWKS: a key has no kty');
  // A JSON round trip: no getters, prototypes or shared references survive into the cache.
  const keys = value.keys.filter(isPublicSigningKey).map((k) => JSON.parse(JSON.stringify(k)) as JWK);
  return { keys };
}

/** A set as it was fetched: `fetchedAt` in ms since the epoch, when it last came from the issuer. */
export interface KeySetSnapshot {
  jwks: JSONWebKeySet;
  fetchedAt: number;
}

export interface KeySetCacheOptions {
  /** Fetches the current set. `fetchedAt` defaults to now (a copy passes on its origin's time). */
  load(): Promise<{ jwks: unknown; fetchedAt?: number }>;
  /** A set known at start (e.g. from a space process's config). */
  initial?: { jwks: unknown; fetchedAt: number } | undefined;
  refreshMs: number;
  cooldownMs: number;
  maxStaleMs: number;
  now?: () => number;
  /** A fetch failed (the old set, if any, keeps serving). For the log: never echo the body. */
  onError?(err: unknown): void;
  /** The keys changed (a key appeared or went): e.g. forget tokens verified under the old set. */
  onChange?(snapshot: KeySetSnapshot): void;
}

export interface KeySetCache {
  /** For jose's jwtVerify (and so for {@link IssuerConfig.keys}). */
  getKey: JWTVerifyGetKey;
  /** The set in use, unless there is none or it is older than `maxStaleMs`. */
  current(): KeySetSnapshot | undefined;
  /** Fetches now, unless a fetch is under way (then joins it); resolves false if it failed. */
  refresh(): Promise<boolean>;
}

interface Held extends KeySetSnapshot {
  local: JWTVerifyGetKey;
  text: string;
}

export function createKeySetCache(o: KeySetCacheOptions): KeySetCache {
  for (const k of ['refreshMs', 'cooldownMs', 'maxStaleMs'] as const) {
    if (!(o[k] >= 0 && Number.isFinite(o[k]))) throw new TypeError(`${k} must be a non-negative number`);
  }
  const now = o.now ?? Date.now;
  let held: Held | undefined;
  let lastAttempt = -Infinity;
  let lastFailed = false;
  let pending: Promise<boolean> | undefined;

  /** Holds a fetched set; true if its keys differ from the ones held before. */
  function install(raw: unknown, fetchedAt: number): boolean {
    const jwks = publicKeySet(raw);
    if (!Number.isFinite(fetchedAt)) throw new TypeError('fetchedAt must be a number');
    // A copy can arrive late; never go back to an older set than the one held.
    if (held && fetchedAt < held.fetchedAt) return false;
    const text = JSON.stringify(jwks);
    const changed = held?.text !== text;
    held = { jwks, fetchedAt, text, local: changed || !held ? createLocalJWKSet(jwks) : held.local };
    return changed;
  }

  // The initial set is no change: nothing was verified before it.
  if (o.initial) {
    try {
      install(o.initial.jwks, o.initial.fetchedAt);
    } catch (err) {
      o.onError?.(err);
    }
  }

  function refresh(): Promise<boolean> {
    if (pending) return pending;
    lastAttempt = now();
    const p = (async () => {
      let changed: boolean;
      try {
        const r = await o.load();
        changed = install(r.jwks, r.fetchedAt ?? now());
      } catch (err) {
        lastFailed = true;
        o.onError?.(err);
        return false;
      }
      lastFailed = false;
      if (changed && held) o.onChange?.({ jwks: held.jwks, fetchedAt: held.fetchedAt });
      return true;
    })();
    pending = p;
    void p.finally(() => {
      if (pending === p) pending = undefined;
    });
    return p;
  }

  /** A fetch unless one ran within the cooldown: 'cooldown' means none was tried. */
  async function maybeRefresh(): Promise<'ok' | 'failed' | 'cooldown'> {
    if (!pending && now() - lastAttempt < o.cooldownMs) return 'cooldown';
    return (await refresh()) ? 'ok' : 'failed';
  }

  const usable = (): Held | undefined => (held && now() - held.fetchedAt <= o.maxStaleMs ? held : undefined);
  const unavailable = () => new OcsError('unavailable', "the token issuer's keys could not be fetched; retry shortly");

  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (!held || now() - held.fetchedAt > o.refreshMs) await maybeRefresh();
    const h = usable();
    if (!h) throw unavailable();
    try {
      return await h.local(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      // Perhaps the issuer rotated: look once more, unless we looked a moment ago. If the last
      // look failed we cannot tell a new key from a bogus kid: retry later, not "unknown".
      const r = await maybeRefresh();
      if (r === 'failed' || (r === 'cooldown' && lastFailed)) throw unavailable();
      if (r === 'cooldown') throw err;
      const again = usable();
      if (!again) throw unavailable();
      return again.local(header, token);
    }
  };

  return {
    getKey,
    current: () => {
      const h = usable();
      return h ? { jwks: h.jwks, fetchedAt: h.fetchedAt } : undefined;
    },
    refresh,
  };
}
