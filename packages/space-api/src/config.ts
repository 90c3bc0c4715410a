/** The space process's start-up facts, written by the daemon (public data only). */
import { readFileSync } from 'node:fs';
import { Type, type Static } from '@sinclair/typebox';
import { Obj, Resources, validate } from '@ocs/protocol';

export const SpaceProcessConfig = Obj({
  spaceId: Type.String(),
  ownerKey: Type.String(),
  org: Type.String(),
  resources: Resources,
  auth: Obj({
    issuers: Type.Array(
      Obj({
        issuer: Type.String(),
        jwks: Type.Optional(Type.Object({ keys: Type.Array(Type.Record(Type.String(), Type.Unknown())) })),
        jwksUri: Type.Optional(Type.String()),
      }),
    ),
    audiences: Type.Array(Type.String()),
    maxTokenLifetimeSeconds: Type.Integer(),
    clockToleranceSeconds: Type.Integer(),
  }),
  socket: Type.String(),
  brokerSocket: Type.String(),
  dataDir: Type.String(),
  idleSeconds: Type.Integer({ minimum: 1 }),
  /** The node's own authorities (`host:port`): a request naming another is refused here too. */
  authorities: Type.Array(Type.String(), { minItems: 1 }),
});
export type SpaceProcessConfig = Static<typeof SpaceProcessConfig>;

export function loadConfig(path: string): SpaceProcessConfig {
  return validate(SpaceProcessConfig, JSON.parse(readFileSync(path, 'utf8')));
}
