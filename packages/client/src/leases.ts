/**
 * Leases for orchestrators: place a space on one of several nodes, and keep its lease renewed.
 *
 * Placement asks each node, in the caller's order of preference, what it has free
 * (`GET /v1/node`), and reserves on the first that fits, under an idempotency key, so that a
 * retry after a lost response returns that same space. A node that cannot be reached, or that
 * turns out full when the reservation arrives (another orchestrator was faster), is skipped.
 */
import type { Resources } from '@ocs/protocol';
import { OcsError } from '@ocs/protocol';
import { newIdempotencyKey, type OcsClient } from './resources.js';

export interface LeaseTarget {
  /** The caller's name for the node (recorded with the lease). */
  name: string;
  /** A client for that node, with the token and the owner key the space is bound to. */
  client: OcsClient;
}

export interface Lease {
  node: string;
  spaceId: string;
  /** The space key, wrapped to the owner key: only that key's holder can unlock the space. */
  wrappedKey: string;
  resources: Resources;
  leaseSeconds: number;
  expiresAt: string;
  placedAt: string;
}

export interface PlaceRequest {
  resources: Resources;
  leaseSeconds: number;
  name?: string;
}

/** Why a node was passed over. */
export interface Skipped {
  node: string;
  reason: string;
}

const fits = (free: Resources, want: Resources) =>
  free.cpuMillicores >= want.cpuMillicores &&
  free.memoryBytes >= want.memoryBytes &&
  free.storageBytes >= want.storageBytes;

/**
 * Reserves on the first node that has room. Throws `capacity_exceeded` (with every node's
 * reason in `details.skipped`) when none has.
 */
export async function placeLease(
  targets: LeaseTarget[],
  req: PlaceRequest,
  o: { onSkip?: (s: Skipped) => void } = {},
): Promise<Lease> {
  const skipped: Skipped[] = [];
  const skip = (node: string, reason: string) => {
    const s = { node, reason };
    skipped.push(s);
    o.onSkip?.(s);
  };
  for (const t of targets) {
    let free: Resources;
    try {
      const { capacity, draining } = await t.client.node.info();
      // A node being retired takes no new space: not asked at all.
      if (draining) {
        skip(t.name, 'being drained (retired)');
        continue;
      }
      free = {
        cpuMillicores: capacity.allocatable.cpuMillicores - capacity.used.cpuMillicores,
        memoryBytes: capacity.allocatable.memoryBytes - capacity.used.memoryBytes,
        storageBytes: capacity.allocatable.storageBytes - capacity.used.storageBytes,
      };
    } catch (err) {
      skip(t.name, `unreachable or refused: ${describe(err)}`);
      continue;
    }
    if (!fits(free, req.resources)) {
      skip(t.name, 'not enough free capacity');
      continue;
    }
    try {
      const { space, wrappedKey } = await t.client.spaces.reserve(
        { resources: req.resources, leaseSeconds: req.leaseSeconds, ...(req.name ? { name: req.name } : {}) },
        { idempotencyKey: newIdempotencyKey() },
      );
      return {
        node: t.name,
        spaceId: space.id,
        wrappedKey,
        resources: space.resources,
        leaseSeconds: req.leaseSeconds,
        expiresAt: space.lease.expiresAt,
        placedAt: new Date().toISOString(),
      };
    } catch (err) {
      // Full by the time the reservation came, drained meanwhile, or gone: the next node may do.
      if (
        err instanceof OcsError &&
        err.code !== 'capacity_exceeded' &&
        err.code !== 'unavailable' &&
        err.code !== 'node_draining'
      )
        throw err;
      skip(t.name, describe(err));
    }
  }
  throw new OcsError('capacity_exceeded', 'no node has room for this lease', { skipped });
}

/** Renewal is due once less than `fraction` of the lease is left (half, by default). */
export function renewalDue(
  lease: Pick<Lease, 'expiresAt' | 'leaseSeconds'>,
  now = Date.now(),
  fraction = 0.5,
): boolean {
  return Date.parse(lease.expiresAt) - now < lease.leaseSeconds * 1000 * fraction;
}

/** Renews for the lease's own length; returns the lease with its new expiry. */
export async function renewLease(client: OcsClient, lease: Lease): Promise<Lease> {
  const space = await client.spaces.renew(lease.spaceId, lease.leaseSeconds);
  return { ...lease, expiresAt: space.lease.expiresAt };
}

function describe(err: unknown): string {
  if (err instanceof OcsError) return `${err.code}: ${err.message}`;
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}` : String((err as Error)?.message ?? err);
}
