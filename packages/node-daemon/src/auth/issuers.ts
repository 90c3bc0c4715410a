/**
 * The issuers this node trusts, and their keys: inline sets from the config, the dev issuer,
 * and sets the daemon fetches from each `jwksUri`. The daemon is the only process that talks to
 * an issuer: space processes have no network, so they get the sets from here, at start in their
 * config and later through the broker (`issuerKeys`) when theirs are old or miss a `kid`.
 */
import { readFileSync } from 'node:fs';
import {
  DEFAULT_TOKEN_TYPE,
  createKeySetCache,
  publicKeySet,
  type IssuerConfig,
  type IssuerKeySets,
  type KeySetCache,
  type SpaceIssuer,
} from '@ocs/protocol';
import type { Config } from '../config.js';
import type { Clock } from '../clock.js';
import type { DevIssuer } from '../identity.js';
import type { Logger } from '../logger.js';
import { fetchJwks, type FetchJwksOptions } from './jwks-fetch.js';

export interface NodeIssuers {
  /** For createTokenVerifier. */
  policy: IssuerConfig[];
  /** What a space process is told at its start. */
  forSpace(): SpaceIssuer[];
  /** The fetched sets as held now, for the broker. */
  remoteKeys(): IssuerKeySets;
  /** Fetches every remote set once (at start, so the first token waits for nothing); never throws. */
  warm(): Promise<void>;
}

export interface NodeIssuersOptions {
  config: Config;
  devIssuer: DevIssuer | undefined;
  logger: Logger;
  clock: Clock;
  /** A remote set changed: cached token verdicts must go. */
  onKeysChanged(issuer: string): void;
  /** Injected by tests; default: HTTPS with the issuer's `caFile`. */
  fetch?: (url: string, o: FetchJwksOptions) => Promise<unknown>;
}

interface Remote {
  issuer: string;
  tokenType: string;
  cache: KeySetCache;
}

export function createNodeIssuers(o: NodeIssuersOptions): NodeIssuers {
  const { auth } = o.config;
  const policy: IssuerConfig[] = [];
  const inline: SpaceIssuer[] = [];
  const remotes: Remote[] = [];
  const fetch = o.fetch ?? fetchJwks;

  auth.issuers.forEach((i, n) => {
    const tokenType = i.tokenType ?? DEFAULT_TOKEN_TYPE;
    if (i.jwksUri === undefined) {
      // Public keys only: this set is copied into every space process's config.
      let jwks;
      try {
        jwks = publicKeySet(i.jwks);
      } catch (err) {
        throw new Error(`configuration /auth/issuers/${n}/jwks: ${(err as Error).message}`);
      }
      policy.push({ issuer: i.issuer, keys: jwks, tokenType });
      inline.push({ issuer: i.issuer, tokenType, jwks, remote: false });
      return;
    }
    const uri = i.jwksUri;
    let ca: string | undefined;
    if (i.caFile !== undefined) {
      try {
        ca = readFileSync(i.caFile, 'utf8');
      } catch (err) {
        throw new Error(`configuration /auth/issuers/${n}/caFile: ${(err as Error).message}`);
      }
    }
    const log = o.logger.child({ issuer: i.issuer, jwksUri: uri });
    const cache = createKeySetCache({
      load: async () => ({ jwks: await fetch(uri, ca !== undefined ? { ca } : {}) }),
      refreshMs: auth.remoteKeys.refreshSeconds * 1000,
      cooldownMs: auth.remoteKeys.cooldownSeconds * 1000,
      maxStaleMs: auth.remoteKeys.maxStaleSeconds * 1000,
      now: () => o.clock.now(),
      // The message is ours (fixed strings from fetchJwks or the JWKS check), never the body.
      onError: (err) => log.warn({ reason: (err as Error).message }, 'issuer keys could not be fetched'),
      onChange: (s) => {
        log.info({ kids: s.jwks.keys.map((k) => k.kid ?? null) }, 'issuer keys changed');
        o.onKeysChanged(i.issuer);
      },
    });
    policy.push({ issuer: i.issuer, keys: cache.getKey, tokenType });
    remotes.push({ issuer: i.issuer, tokenType, cache });
  });
  if (o.devIssuer) {
    const jwks = { keys: [o.devIssuer.publicJwk] };
    policy.push({ issuer: o.devIssuer.issuer, keys: jwks, tokenType: DEFAULT_TOKEN_TYPE });
    inline.push({ issuer: o.devIssuer.issuer, tokenType: DEFAULT_TOKEN_TYPE, jwks, remote: false });
  }

  return {
    policy,
    forSpace: () => [
      ...inline,
      ...remotes.map((r): SpaceIssuer => {
        const held = r.cache.current();
        return {
          issuer: r.issuer,
          tokenType: r.tokenType,
          jwks: held?.jwks ?? { keys: [] },
          remote: true,
          ...(held ? { fetchedAt: Math.floor(held.fetchedAt) } : {}),
        };
      }),
    ],
    remoteKeys: () => ({
      issuers: remotes.flatMap((r) => {
        const held = r.cache.current();
        return held ? [{ issuer: r.issuer, jwks: held.jwks, fetchedAt: Math.floor(held.fetchedAt) }] : [];
      }),
    }),
    warm: async () => {
      await Promise.all(remotes.map((r) => r.cache.refresh()));
    },
  };
}
