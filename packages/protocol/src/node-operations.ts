/**
 * The catalogue of the node daemon's own operations (health, the node, reservations and a
 * space's life cycle, the audit log): each declared once, with its route, whether it is
 * read-only, what it acts on and, where the host can fail under it, which part. `NODE_ROUTES`
 * (routes.ts) is a view of this table, in this order; the daemon binds every route from it.
 * A space's own operations are `SPACE_OPERATIONS` (operations.ts).
 */
import { Type } from '@sinclair/typebox';
import { Empty, Obj, SpaceId } from './schemas/common.js';
import * as N from './schemas/node.js';
import type { HostPart } from './operations.js';
import type { RouteSpec } from './routes.js';

export interface NodeOperationSpec {
  /** Changes nothing: its route is a GET. */
  readOnly: boolean;
  /** What it acts on: the node itself or one space. */
  kind: 'node' | 'space';
  /** The part of the host its work can fail in; none when it touches only the daemon's database. */
  part?: HostPart;
  /** Its route on the node API; its id is the operation's name. */
  route: Omit<RouteSpec, 'id'>;
}

const SpaceRef = Obj({ spaceId: SpaceId });
/** A client's key for one reservation: a retry with the same key returns the same space. */
export const IdempotencyKey = Type.String({
  pattern: '^[A-Za-z0-9_.:-]{16,128}$',
  description: 'Chosen by the client (16 to 128 of A-Z a-z 0-9 _ . : -); kept for 24 hours.',
});
export const CreateSpaceHeaders = Obj({ 'idempotency-key': Type.Optional(IdempotencyKey) });
/** A restore's reservation: what the archive does not say (its resources come from its head). */
export const RestoreSpaceQuery = Obj({
  leaseSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86400 }),
  name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
});
/** How an archive a node receives (a restore's, a move's) can be refused, whoever sent it. */
const ARCHIVE_REFUSALS = [
  'archive_malformed',
  'archive_version',
  'archive_corrupt',
  'archive_signature_invalid',
  'archive_filesystem_invalid',
  'archive_backend',
] as const;

export const AuditQuery = Obj({
  after: Type.Optional(Type.Integer({ minimum: 0, description: 'Entries after this sequence number.' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'At most this many (default 100).' })),
});

export const NODE_OPERATIONS = {
  health: {
    readOnly: true,
    kind: 'node',
    route: {
      method: 'GET',
      path: '/healthz',
      summary: 'Liveness',
      roles: [],
      signature: 'none',
      response: N.Health,
      status: 200,
    },
  },
  metrics: {
    readOnly: true,
    kind: 'node',
    route: {
      method: 'GET',
      path: '/metrics',
      // Counts of spaces, workloads and refusals say what a node holds and who is refused: only
      // for the node's monitors and its farmer (a scraper's token: docs/operator-guide.md).
      summary: 'Prometheus metrics',
      roles: ['monitor', 'farmer'],
      signature: 'none',
      response: 'text',
      status: 200,
    },
  },
  getNode: {
    readOnly: true,
    kind: 'node',
    route: {
      method: 'GET',
      path: '/v1/node',
      summary: 'Identity, TLS fingerprint, unlock recipient and capacity',
      roles: ['farmer', 'spaces', 'monitor'],
      signature: 'none',
      response: N.NodeInfo,
      status: 200,
    },
  },
  createSpace: {
    readOnly: false,
    kind: 'space',
    // The space's cgroup, its encrypted storage and its process.
    part: 'host',
    route: {
      method: 'POST',
      path: '/v1/spaces',
      headers: CreateSpaceHeaders,
      summary: 'Reserve a space bound to an owner key',
      roles: ['spaces'],
      signature: 'bound-key',
      body: N.CreateSpaceRequest,
      response: N.CreateSpaceResponse,
      status: 201,
      errors: ['capacity_exceeded', 'conflict', 'key_malformed', 'key_unsupported', 'key_encrypted'],
    },
  },
  listSpaces: {
    readOnly: true,
    kind: 'space',
    route: {
      method: 'GET',
      path: '/v1/spaces',
      summary: "Spaces of the caller's org (all for farmer and monitor)",
      roles: ['spaces', 'farmer', 'monitor'],
      signature: 'none',
      response: N.SpaceList,
      status: 200,
    },
  },
  getSpace: {
    readOnly: true,
    kind: 'space',
    route: {
      method: 'GET',
      path: '/v1/spaces/{spaceId}',
      params: SpaceRef,
      summary: 'One space',
      roles: ['spaces', 'farmer', 'monitor'],
      signature: 'none',
      response: N.Space,
      status: 200,
    },
  },
  renewSpace: {
    readOnly: false,
    kind: 'space',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/renew',
      params: SpaceRef,
      summary: 'Extend the lease (never shortens it)',
      roles: ['spaces', 'farmer'],
      signature: 'owner-or-farmer',
      body: N.RenewRequest,
      response: N.Space,
      status: 200,
      errors: ['lease_expired'],
    },
  },
  lockSpace: {
    readOnly: false,
    kind: 'space',
    // Stopping the workloads (engine, libvirt) and evicting the storage key.
    part: 'host',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/lock',
      params: SpaceRef,
      summary: 'Stop workloads and evict the storage key',
      roles: ['spaces', 'storage'],
      signature: 'owner',
      body: Empty,
      response: N.Space,
      status: 200,
      errors: ['space_locked', 'lease_expired'],
    },
  },
  unlockSpace: {
    readOnly: false,
    kind: 'space',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/unlock',
      params: SpaceRef,
      summary: 'Load the space key, sealed to the node unlock recipient',
      roles: ['spaces', 'storage'],
      signature: 'owner',
      body: N.UnlockRequest,
      response: N.Space,
      status: 200,
      errors: ['space_unlocked', 'unwrap_failed', 'lease_expired'],
    },
  },
  rotateSpaceKey: {
    readOnly: false,
    kind: 'space',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/rotate-key',
      params: SpaceRef,
      summary: 'Re-wrap the storage under a fresh key',
      roles: ['spaces', 'storage'],
      signature: 'owner',
      body: N.RotateKeyRequest,
      response: N.RotateKeyResponse,
      status: 200,
      errors: ['space_locked', 'unwrap_failed', 'lease_expired'],
    },
  },
  exportSpace: {
    readOnly: true,
    kind: 'space',
    // Reading the space's image from the storage root.
    part: 'storage',
    route: {
      method: 'GET',
      path: '/v1/spaces/{spaceId}/archive',
      params: SpaceRef,
      summary:
        "The space's storage as it lies on disk (ciphertext), streamed as a space archive; the space must be locked",
      roles: ['spaces', 'storage'],
      signature: 'owner',
      response: 'binary',
      status: 200,
      errors: ['space_unlocked', 'conflict', 'unavailable'],
    },
  },
  restoreSpace: {
    readOnly: false,
    kind: 'space',
    // Writing the image into the storage root, checking its filesystem, the space's cgroups.
    part: 'storage',
    route: {
      method: 'POST',
      path: '/v1/spaces/restore',
      query: RestoreSpaceQuery,
      summary:
        'Reserve a new space holding a space archive (a fork of the archived space), locked: the owner unlocks it with the same key',
      roles: ['spaces'],
      // Signed by the key the archive binds (its head's owner key), like a reservation.
      signature: 'bound-key',
      body: 'binary',
      response: N.Space,
      status: 201,
      errors: [
        'capacity_exceeded',
        // The ids the space had on its source overlap this node's for it (remapClash).
        'conflict',
        'node_draining',
        'digest_missing',
        'digest_mismatch',
        ...ARCHIVE_REFUSALS,
        'unavailable',
      ],
    },
  },
  openImport: {
    readOnly: false,
    kind: 'space',
    // The space's cgroups.
    part: 'host',
    route: {
      method: 'POST',
      path: '/v1/spaces/imports',
      summary:
        "Reserve room for a space moving here from another node (the move's first step, on the target); it arrives from that node",
      roles: ['spaces'],
      // Signed by the space's owner key (the body names it), like a reservation; or, with the
      // owner's delegation in the body, by an orchestrator key it names.
      signature: 'bound-key',
      body: N.OpenImportRequest,
      response: N.Space,
      status: 201,
      errors: ['capacity_exceeded', 'conflict', 'delegation_invalid', 'not_delegated', 'node_draining', 'unavailable'],
    },
  },
  openPeerImport: {
    readOnly: false,
    kind: 'space',
    part: 'host',
    route: {
      method: 'POST',
      path: '/v1/spaces/imports/peer',
      summary:
        "A draining node's import: room for a space its owner's delegation lets move here, asked by that node itself",
      roles: [],
      // No token: signed by the identity key of a node this node's farmer lists as a peer.
      signature: 'peer-node',
      body: N.PeerImportRequest,
      response: N.Space,
      status: 201,
      errors: ['capacity_exceeded', 'conflict', 'delegation_invalid', 'not_delegated', 'node_draining', 'unavailable'],
    },
  },
  receiveImport: {
    readOnly: false,
    kind: 'space',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/import',
      params: SpaceRef,
      summary: 'The archive of a space moving here, streamed by its source node; kept prepared, not yet unlockable',
      roles: [],
      signature: 'import-source',
      body: 'binary',
      response: N.Space,
      status: 200,
      errors: ['conflict', ...ARCHIVE_REFUSALS],
    },
  },
  importState: {
    readOnly: true,
    kind: 'space',
    part: 'storage',
    route: {
      method: 'GET',
      path: '/v1/spaces/{spaceId}/import',
      params: SpaceRef,
      summary:
        "An import as its source sees it: what it holds of a move's seed, so a cut seed goes on where it stopped",
      roles: [],
      signature: 'import-source',
      response: N.ImportState,
      status: 200,
      errors: ['conflict'],
    },
  },
  commitImport: {
    readOnly: false,
    kind: 'space',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/import/commit',
      params: SpaceRef,
      summary: "The source's commit: the prepared space becomes this node's, locked (idempotent)",
      roles: [],
      signature: 'import-source',
      body: Empty,
      response: N.Space,
      status: 200,
      errors: ['conflict'],
    },
  },
  abortImport: {
    readOnly: false,
    kind: 'space',
    part: 'host',
    route: {
      method: 'DELETE',
      path: '/v1/spaces/{spaceId}/import',
      params: SpaceRef,
      summary: 'Drop an import that was not committed (its source gave up)',
      roles: [],
      signature: 'import-source',
      status: 204,
      errors: ['conflict'],
    },
  },
  moveSpace: {
    readOnly: false,
    kind: 'space',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/move',
      params: SpaceRef,
      summary:
        'Lock the space, stream it to the node that opened an import for it, commit it there, and only then destroy it here; answers its tombstone',
      roles: ['spaces'],
      // The owner's, or an orchestrator's whose key the space's delegation names.
      signature: 'owner-or-delegate',
      body: N.MoveSpaceRequest,
      response: N.Tombstone,
      status: 200,
      errors: ['move_aborted', 'conflict', 'lease_expired', 'unavailable'],
    },
  },
  delegateSpace: {
    readOnly: false,
    kind: 'space',
    route: {
      method: 'POST',
      path: '/v1/spaces/{spaceId}/delegation',
      params: SpaceRef,
      summary:
        "Keep the owner's delegation: which nodes may receive the space, which orchestrator keys may move it, until when (replaces the last)",
      roles: ['spaces'],
      signature: 'owner',
      body: N.DelegateSpaceRequest,
      response: N.Space,
      status: 200,
      errors: ['delegation_invalid'],
    },
  },
  revokeDelegation: {
    readOnly: false,
    kind: 'space',
    route: {
      method: 'DELETE',
      path: '/v1/spaces/{spaceId}/delegation',
      params: SpaceRef,
      summary: "Forget the space's delegation: from now on only the owner moves it",
      roles: ['spaces'],
      signature: 'owner',
      status: 204,
    },
  },
  drainNode: {
    readOnly: false,
    kind: 'node',
    route: {
      method: 'POST',
      path: '/v1/node/drain',
      summary:
        'Retire the node: take no new space, move each space to a node its delegation names, export the others to the export directory',
      roles: ['farmer'],
      signature: 'none',
      body: N.DrainRequest,
      response: N.DrainStatus,
      status: 202,
    },
  },
  getDrain: {
    readOnly: true,
    kind: 'node',
    route: {
      method: 'GET',
      path: '/v1/node/drain',
      summary: "The drain's progress, space by space",
      roles: ['farmer', 'monitor'],
      signature: 'none',
      response: N.DrainStatus,
      status: 200,
    },
  },
  cancelDrain: {
    readOnly: false,
    kind: 'node',
    route: {
      method: 'DELETE',
      path: '/v1/node/drain',
      summary: 'Stop the drain after the step under way; the node takes new spaces again',
      roles: ['farmer'],
      signature: 'none',
      response: N.DrainStatus,
      status: 200,
    },
  },
  deleteSpace: {
    readOnly: false,
    kind: 'space',
    // Its workloads, storage, cgroup and process, all torn down.
    part: 'host',
    route: {
      method: 'DELETE',
      path: '/v1/spaces/{spaceId}',
      params: SpaceRef,
      summary: 'Destroy the space and shred its keys',
      roles: ['spaces', 'farmer'],
      signature: 'owner-or-farmer',
      status: 204,
    },
  },
  listAudit: {
    readOnly: true,
    kind: 'node',
    route: {
      method: 'GET',
      path: '/v1/audit',
      query: AuditQuery,
      summary: 'The hash-chained audit log',
      roles: ['farmer', 'monitor'],
      signature: 'none',
      response: N.AuditPage,
      status: 200,
    },
  },
} as const satisfies Record<string, NodeOperationSpec>;

type NodeOps = typeof NODE_OPERATIONS;
export type NodeOperationName = keyof NodeOps;
/** Every route of the node API, typed from its entry (its id is the entry's name). */
export type NodeRouteOf = { [K in NodeOperationName]: NodeOps[K]['route'] & { id: K } }[NodeOperationName];

export const nodeRoutesOf = (): readonly NodeRouteOf[] =>
  Object.entries(NODE_OPERATIONS as Record<string, NodeOperationSpec>).map(
    ([name, o]) => ({ id: name, ...o.route }) as NodeRouteOf,
  );

/** The part of the host a node operation can fail in (`host_failed` names it); none for database-only ones. */
export function nodeOperationPart(name: string): HostPart | undefined {
  return (NODE_OPERATIONS as Record<string, NodeOperationSpec>)[name]?.part;
}
