/**
 * What the daemon tells a space process: its start-up config (written by the supervisor,
 * validated by the space process) and the issuer keys it hands over later through the broker.
 * One schema for both ends, so a field cannot get lost on the way.
 */
import { Type, type Static } from '@sinclair/typebox';
import { MAX_JWKS_KEYS } from '../key-sets.js';
import { MAX_TOKEN_LIFETIME_SECONDS } from '../jwt.js';
import { Obj, Resources } from './common.js';

/** A JWKS (RFC 7517), public keys only (see `publicKeySet`). */
export const JsonWebKeySet = Obj({
  keys: Type.Array(Type.Record(Type.String(), Type.Unknown()), { maxItems: MAX_JWKS_KEYS }),
});

/** How remote key sets are kept fresh: by the daemon from the issuer, by a space process from the daemon. */
export const RemoteKeysPolicy = Obj({
  /** A set older than this is fetched again before it is used. */
  refreshSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
  /** At most one fetch per this long, however many unknown `kid`s arrive. */
  cooldownSeconds: Type.Integer({ minimum: 1, maximum: 3600 }),
  /** A set not fetched successfully for this long is no longer trusted (`unavailable`). */
  maxStaleSeconds: Type.Integer({ minimum: 60, maximum: 7 * 86_400 }),
});
export type RemoteKeysPolicy = Static<typeof RemoteKeysPolicy>;

/** The keys of the remote issuers, as the daemon holds them now (broker operation `issuerKeys`). */
export const IssuerKeySets = Obj({
  issuers: Type.Array(
    Obj({
      issuer: Type.String({ minLength: 1 }),
      jwks: JsonWebKeySet,
      /** When the daemon last fetched this set from the issuer, in ms since the epoch. */
      fetchedAt: Type.Integer({ minimum: 0 }),
    }),
  ),
});
export type IssuerKeySets = Static<typeof IssuerKeySets>;

export const SpaceIssuer = Obj({
  issuer: Type.String({ minLength: 1 }),
  /** The `typ` its tokens must carry. */
  tokenType: Type.String({ minLength: 1 }),
  /** Its keys when the process starts (possibly none yet, for a remote issuer). */
  jwks: JsonWebKeySet,
  /** Keys fetched by the daemon (`jwksUri`): the space process asks the broker for fresh ones. */
  remote: Type.Boolean(),
  /** For a remote issuer: when the daemon fetched `jwks`, in ms since the epoch. */
  fetchedAt: Type.Optional(Type.Integer({ minimum: 0 })),
});
export type SpaceIssuer = Static<typeof SpaceIssuer>;

/** The space process's start-up facts: public data only, never a key that opens anything. */
export const SpaceProcessConfig = Obj({
  spaceId: Type.String(),
  ownerKey: Type.String(),
  org: Type.String({ minLength: 1 }),
  resources: Resources,
  auth: Obj({
    issuers: Type.Array(SpaceIssuer),
    audiences: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
    maxTokenLifetimeSeconds: Type.Integer({ minimum: 1, maximum: MAX_TOKEN_LIFETIME_SECONDS }),
    clockToleranceSeconds: Type.Integer({ minimum: 0 }),
    remoteKeys: RemoteKeysPolicy,
  }),
  socket: Type.String(),
  /** The space process's home in its encrypted storage (its own uid). */
  dataDir: Type.String(),
  idleSeconds: Type.Integer({ minimum: 1 }),
  /** The node's own authorities (`host:port`): a request naming another is refused here too. */
  authorities: Type.Array(Type.String(), { minItems: 1 }),
  /** The node's TLS certificate fingerprint: a signed request must name it (`ocs-node`). */
  tlsFingerprint: Type.String({ minLength: 1 }),
});
export type SpaceProcessConfig = Static<typeof SpaceProcessConfig>;
