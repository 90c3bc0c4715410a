/**
 * Moving a space between two nodes, as its owner: the target opens an import for it (room
 * reserved, under the space's own id, bound to the owner's key, waiting for the source node's
 * identity key), then the source locks the space and streams it there, node to node, and
 * commits it. The space then waits on the target, locked, for the same wrapped key as before;
 * the source keeps only a tombstone (where it went, signed by the source).
 */
import { OcsError, isOcsError, type Tombstone } from '@ocs/protocol';
import type { OcsClient } from './resources.js';
import { normalizeFingerprint } from './transport.js';

export interface MoveOptions {
  /** The target's URL as the source node reaches it (default: the one `target` uses). */
  targetUrl?: string;
  /** The lease on the target (default: what is left of the source's, at least a minute). */
  leaseSeconds?: number;
}

/** Moves `spaceId` from `source` to `target` (both clients with the owner's key); answers the tombstone. */
export async function moveSpace(
  source: OcsClient,
  target: OcsClient,
  spaceId: string,
  o: MoveOptions = {},
): Promise<Tombstone> {
  const [space, from, to] = await Promise.all([source.spaces.get(spaceId), source.node.info(), target.node.info()]);
  if (from.identityKey === to.identityKey)
    throw new OcsError('invalid_request', 'the source and the target are the same node');
  const left = Math.ceil((Date.parse(space.lease.expiresAt) - Date.now()) / 1000);
  await target.spaces.openImport({
    spaceId,
    resources: space.resources,
    leaseSeconds: o.leaseSeconds ?? Math.min(30 * 86400, Math.max(60, left)),
    source: { identityKey: from.identityKey },
  });
  try {
    return await source.spaces.move(spaceId, {
      url: (o.targetUrl ?? target.options.url).replace(/\/+$/, ''),
      fingerprint: normalizeFingerprint(to.tlsFingerprint),
    });
  } catch (err) {
    // A move that began is the nodes' to end: aborted, the source told the target; unanswered
    // (`unavailable`), the source keeps committing. Anything else (refused before it began, the
    // source gone): an import still waiting for its archive waits for nothing, and its room goes
    // now. One that holds the archive is left to the source, which commits or drops it.
    if (!(isOcsError(err) && (err.code === 'move_aborted' || err.code === 'unavailable'))) {
      const state = await target.spaces.get(spaceId).then(
        (s) => s.state,
        () => undefined,
      );
      if (state === 'importing') await target.spaces.destroy(spaceId).catch(() => undefined);
    }
    throw err;
  }
}
