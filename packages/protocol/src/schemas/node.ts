/** Bodies of the node daemon's farmer-facing API (`/v1/...`). */
import { Type, type Static } from '@sinclair/typebox';
import { Obj, PublicKeyInput, Resources, SpaceId, Timestamp } from './common.js';
import { Egress, PublishedPort } from './space.js';
import { SEED_DATASET, SNAPSHOT_GUID } from '../space-archive.js';

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
    /** The node is being retired: it takes no new space, and its spaces are leaving. */
    draining: Type.Boolean(),
  },
  {},
);
export type NodeInfo = Static<typeof NodeInfo>;

/**
 * Every state of a space, in the order of its life (`failed` can happen from any live state).
 * A move adds four: on the target `importing` (its archive arriving) and `prepared` (whole and
 * checked, not yet its own: nobody can unlock it), on the source `moving` (its archive
 * streaming) and `committing` (the target is being told to keep it; never undone from here).
 * `locking`: a lock answered, its space still shutting down (its workloads stopping, its key
 * being evicted); nothing of it runs or opens again until it is `locked`.
 */
export const SPACE_STATES = [
  'creating',
  'active',
  'locked',
  'expired',
  'destroying',
  'destroyed',
  'failed',
  'importing',
  'prepared',
  'moving',
  'committing',
  'locking',
] as const;
export type SpaceState = (typeof SPACE_STATES)[number];
export const SpaceState = Type.Union(
  SPACE_STATES.map((s) => Type.Literal(s)),
  {},
);

/** Where a space moves: a node, by its URL and its TLS certificate's fingerprint (pinned). */
export const MoveTarget = Obj(
  {
    url: Type.String({
      pattern: '^https://[A-Za-z0-9.:\\[\\]-]{1,255}$',
      description: 'https://host:port of the node',
    }),
    fingerprint: Type.String({
      pattern: '^[0-9A-F]{2}(:[0-9A-F]{2}){31}$',
      description: "The node's TLS certificate, SHA-256",
    }),
  },
  {},
);
export type MoveTarget = Static<typeof MoveTarget>;

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
    /** A lock under way (`locking`): what is still shutting down, since when. */
    locking: Type.Optional(
      Obj(
        {
          step: Type.Union([Type.Literal('process'), Type.Literal('workloads'), Type.Literal('storage')]),
          since: Timestamp,
          /** Why the last attempt did not end it (the lock is tried again until it does). */
          error: Type.Optional(Type.String()),
        },
        {},
      ),
    ),
    /** A move under way (`moving`, `committing`): the node it goes to. */
    move: Type.Optional(Obj({ to: MoveTarget }, {})),
    /** What the owner's delegation allows (who may move the space without the owner, until when). */
    delegation: Type.Optional(
      Obj({ nodes: Type.Array(MoveTarget), orchestrators: Type.Array(Type.String()), notAfter: Timestamp }, {}),
    ),
  },
  {},
);
export type Space = Static<typeof Space>;

/**
 * A move: the target opens an import for the space (the owner asks it, `openImport`), then
 * the source streams the space there and commits it (the owner asks it, `moveSpace`).
 */
export const OpenImportRequest = Obj(
  {
    spaceId: SpaceId,
    ownerKey: PublicKeyInput,
    resources: Resources,
    leaseSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86400 }),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    /** The node the space comes from: only a request signed by its identity key sends, commits or aborts. */
    source: Obj({ identityKey: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }) }),
    /**
     * The owner's delegation (a compact JWS): with it, an orchestrator key it names signs this
     * request instead of the owner's key.
     */
    delegation: Type.Optional(Type.String({ maxLength: 8192 })),
  },
  {},
);
export type OpenImportRequest = Static<typeof OpenImportRequest>;

/**
 * An import as its source node sees it: whether it is still waiting, and what it holds of a
 * move's seed (the datasets it has whole, and the one a cut stream left in part, with the ZFS
 * resume token the source goes on from), so a cut seed is resumed rather than sent again.
 */
export const ImportState = Obj(
  {
    spaceId: SpaceId,
    state: Type.String({ maxLength: 32 }),
    seed: Type.Optional(
      Obj({
        base: SNAPSHOT_GUID,
        held: Type.Array(SEED_DATASET, { maxItems: 1024 }),
        partial: Type.Optional(Obj({ dataset: SEED_DATASET, token: Type.String({ pattern: '^[0-9a-f-]{1,8400}$' }) })),
      }),
    ),
  },
  {},
);
export type ImportState = Static<typeof ImportState>;

/**
 * A drain's import, asked by the draining node itself (signed by its identity key, which this
 * node's farmer lists as a peer), on the authority of the owner's delegation naming this node.
 */
export const PeerImportRequest = Obj(
  {
    spaceId: SpaceId,
    resources: Resources,
    leaseSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86400 }),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    delegation: Type.String({ maxLength: 8192 }),
  },
  {},
);
export type PeerImportRequest = Static<typeof PeerImportRequest>;

/** The owner's delegation for a space (made with `signDelegation`). */
export const DelegateSpaceRequest = Obj({ delegation: Type.String({ maxLength: 8192 }) }, {});
export type DelegateSpaceRequest = Static<typeof DelegateSpaceRequest>;

/** A drain: how long spaces delegated to an orchestrator wait for it before they are exported. */
export const DrainRequest = Obj(
  {
    graceSeconds: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 86400, description: 'Default 600: orchestrators get ten minutes.' }),
    ),
  },
  {},
);
export type DrainRequest = Static<typeof DrainRequest>;

export const DRAIN_OUTCOMES = ['pending', 'waiting', 'moving', 'moved', 'exporting', 'exported', 'failed'] as const;
export const DrainStatus = Obj(
  {
    /** `draining` while spaces are left; `drained` when none is; `cancelled` by the farmer. */
    state: Type.Union([Type.Literal('draining'), Type.Literal('drained'), Type.Literal('cancelled')]),
    startedAt: Timestamp,
    /** Until when spaces delegated to an orchestrator wait for it. */
    graceUntil: Timestamp,
    /** Where spaces that go nowhere else are exported (the node's `drain.exportDir`). */
    exportDir: Type.String(),
    spaces: Type.Array(
      Obj(
        {
          spaceId: SpaceId,
          outcome: Type.Union(DRAIN_OUTCOMES.map((o) => Type.Literal(o))),
          to: Type.Optional(MoveTarget),
          /** The archive's file name in the export directory. */
          archive: Type.Optional(Type.String()),
          /** Why the last attempt failed (a stable code and its message). */
          error: Type.Optional(Obj({ code: Type.String(), message: Type.String() }, {})),
        },
        {},
      ),
    ),
  },
  {},
);
export type DrainStatus = Static<typeof DrainStatus>;

export const MoveSpaceRequest = Obj({ to: MoveTarget }, {});
export type MoveSpaceRequest = Static<typeof MoveSpaceRequest>;

/**
 * What a node answers about a space that moved away (`space_moved`, in the refusal's details):
 * where it went, signed by this node's identity key over {@link tombstoneSigningInput}.
 */
export const Tombstone = Obj(
  {
    spaceId: SpaceId,
    /** The node it moved to; absent when a drain exported it (`archive`). */
    to: Type.Optional(MoveTarget),
    /**
     * A drain found no node the owner allowed: the space was exported into this file of the
     * node's export directory, for its owner to restore anywhere.
     */
    archive: Type.Optional(Obj({ name: Type.String() }, {})),
    movedAt: Timestamp,
    /** base64url Ed25519 signature by the source node's identity key. */
    signature: Type.String(),
  },
  {},
);
export type Tombstone = Static<typeof Tombstone>;

/** What a tombstone's signature covers: a domain tag and its fields, in a fixed order. */
export function tombstoneSigningInput(t: Omit<Tombstone, 'signature'>): Uint8Array {
  if (t.to)
    return new TextEncoder().encode(`ocs-tombstone-v1\0${t.spaceId}\0${t.to.url}\0${t.to.fingerprint}\0${t.movedAt}`);
  if (!t.archive) throw new TypeError('a tombstone names where the space went');
  return new TextEncoder().encode(`ocs-tombstone-archive-v1\0${t.spaceId}\0${t.archive.name}\0${t.movedAt}`);
}

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
