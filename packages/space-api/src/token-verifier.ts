/**
 * The space process's token verifier. It checks every token itself, with the keys of every
 * issuer the node trusts, yet it has no network: inline sets come in its config, and the sets
 * the daemon fetches from `jwksUri` issuers come from the daemon, in the config at start and
 * then through the broker when the copy here is older than the refresh period or lacks a token's
 * `kid`. Same cache and rules as the daemon's (`createKeySetCache`), so a rotated key reaches a
 * running process without a restart, and a withdrawn one stops working here too.
 */
import {
  cacheTokens,
  createKeySetCache,
  createTokenVerifier,
  type CachedTokenVerifier,
  type IssuerConfig,
  type SpaceProcessConfig,
} from '@ocs/protocol';
import type { Logger } from 'pino';
import type { BrokerCall } from './broker-client.js';

export function spaceTokenVerifier(
  auth: SpaceProcessConfig['auth'],
  broker: BrokerCall,
  logger: Logger,
  now: () => number = Date.now,
): CachedTokenVerifier {
  const issuers: IssuerConfig[] = auth.issuers.map((i) => {
    if (!i.remote) return { issuer: i.issuer, keys: i.jwks, tokenType: i.tokenType };
    const cache = createKeySetCache({
      initial: i.fetchedAt !== undefined ? { jwks: i.jwks, fetchedAt: i.fetchedAt } : undefined,
      load: async () => {
        const held = (await broker('issuerKeys', {})).issuers.find((k) => k.issuer === i.issuer);
        if (!held) throw new Error('the daemon holds no keys for this issuer');
        return held;
      },
      refreshMs: auth.remoteKeys.refreshSeconds * 1000,
      // No cooldown here: the broker is local, and a token reaches this process only after the
      // daemon verified it, so an unknown kid means the daemon has just fetched the new key.
      cooldownMs: 0,
      maxStaleMs: auth.remoteKeys.maxStaleSeconds * 1000,
      now,
      onError: (err) => logger.warn({ issuer: i.issuer, reason: (err as Error).message }, 'issuer keys not renewed'),
      onChange: () => verifier.clear(),
    });
    return { issuer: i.issuer, keys: cache.getKey, tokenType: i.tokenType };
  });
  const verifier = cacheTokens(
    createTokenVerifier({
      issuers,
      audiences: auth.audiences,
      maxLifetimeSeconds: auth.maxTokenLifetimeSeconds,
      clockToleranceSeconds: auth.clockToleranceSeconds,
    }),
  );
  return verifier;
}
