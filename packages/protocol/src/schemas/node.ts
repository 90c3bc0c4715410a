/** Bodies of the node daemon's farmer-facing API (`/v1/...`). */
import { Type, type Static } from '@sinclair/typebox';
import { Obj, PublicKeyInput, Resources, SpaceId, Timestamp } from './common.js';
import { Egress, PublishedPort } from './space.js';

export const Capacity = Obj(
  {
    total: Resources,
    farmerReserve: Resources,
    allocatable: Resources,
    used: Resources,
  },
  {},
);
export type Capacity = Static<typeof Capacity>;

export const NodeInfo = Obj(
  {
    id: Type.String(),
    version: Type.String(),
    identityKey: Type.String({ description: "The node's Ed25519 identity key, base64url." }),
    tlsFingerprint: Type.String({ description: 'SHA-256 of the TLS certificate (DER), hex with colons.' }),
    unlockRecipient: Type.String({
      description: 'age X25519 recipient (age1...): encrypt a space key to it to unlock the space.',
    }),
    storageBackend: Type.Union([Type.Literal('fscrypt'), Type.Literal('zfs')]),
    storageCipher: Obj(
      {
        algorithm: Type.String(),
        driver: Type.String({ description: 'The kernel driver that encrypts space data.' }),
        accelerated: Type.Boolean({
          description: 'false: the generic AES implementation; encrypted I/O runs at a fraction of plain I/O.',
        }),
      },
      {},
    ),
    capacity: Capacity,
    spaces: Type.Integer({ minimum: 0 }),
  },
  {},
);
export type NodeInfo = Static<typeof NodeInfo>;

/** Every state of a space, in the order of its life (`failed` can happen from any live state). */
export const SPACE_STATES = ['creating', 'active', 'locked', 'expired', 'destroying', 'destroyed', 'failed'] as const;
export type SpaceState = (typeof SPACE_STATES)[number];
export const SpaceState = Type.Union(
  SPACE_STATES.map((s) => Type.Literal(s)),
  {},
);

export const Lease = Obj({
  expiresAt: Timestamp,
  graceUntil: Timestamp,
});

export const Space = Obj(
  {
    id: SpaceId,
    org: Type.String(),
    ownerKey: Type.String({ description: 'The bound owner key, base64url.' }),
    ownerFingerprint: Type.String({ description: 'SHA256:... as ssh-keygen -l prints it.' }),
    resources: Resources,
    state: SpaceState,
    lease: Lease,
    createdAt: Timestamp,
    apiBase: Type.String({ description: 'Path prefix of the space API.' }),
    storage: Obj({ backend: Type.String(), sizeBytes: Type.Integer(), unlocked: Type.Boolean() }),
    /** Where the space may reach out, and what it publishes where. */
    network: Obj({ egress: Egress, published: Type.Array(PublishedPort) }, {}),
  },
  {},
);
export type Space = Static<typeof Space>;

export const CreateSpaceRequest = Obj(
  {
    ownerKey: PublicKeyInput,
    resources: Resources,
    leaseSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86400 }),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
  },
  {},
);
export type CreateSpaceRequest = Static<typeof CreateSpaceRequest>;

export const CreateSpaceResponse = Obj(
  {
    space: Space,
    wrappedKey: Type.String({ description: 'The space key in age format (armored), for the owner key only.' }),
  },
  {},
);
export type CreateSpaceResponse = Static<typeof CreateSpaceResponse>;

export const SpaceList = Obj({ spaces: Type.Array(Space) });
export type SpaceList = Static<typeof SpaceList>;

export const RenewRequest = Obj({ leaseSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86400 }) }, {});
export type RenewRequest = Static<typeof RenewRequest>;

export const UnlockRequest = Obj(
  {
    sealedKey: Type.String({
      maxLength: 8192,
      description: "The space key as an age file (armored) encrypted to the node's unlockRecipient.",
    }),
  },
  {},
);
export type UnlockRequest = Static<typeof UnlockRequest>;

export const RotateKeyRequest = Obj(
  {
    sealedKey: Type.String({
      maxLength: 8192,
      description: "The current space key, age-encrypted to the node's unlockRecipient (proves the owner holds it).",
    }),
  },
  {},
);
export type RotateKeyRequest = Static<typeof RotateKeyRequest>;

export const RotateKeyResponse = Obj({ wrappedKey: Type.String() });
export type RotateKeyResponse = Static<typeof RotateKeyResponse>;

export const AuditEntry = Obj(
  {
    seq: Type.Integer({ minimum: 1 }),
    at: Timestamp,
    actor: Type.String({ description: 'Token subject, owner fingerprint, or "node".' }),
    action: Type.String(),
    target: Type.Optional(Type.String()),
    outcome: Type.Union([Type.Literal('ok'), Type.Literal('refused'), Type.Literal('failed')]),
    code: Type.Optional(Type.String()),
    detail: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'Small, scrubbed context; never secrets.' }),
    ),
    prevHash: Type.String(),
    hash: Type.String({ description: 'SHA-256 over the previous hash and this entry (hex).' }),
  },
  {},
);
export type AuditEntry = Static<typeof AuditEntry>;

export const AuditPage = Obj({ entries: Type.Array(AuditEntry), head: Type.String() });
export type AuditPage = Static<typeof AuditPage>;

export const Health = Obj({ status: Type.Literal('ok') });
