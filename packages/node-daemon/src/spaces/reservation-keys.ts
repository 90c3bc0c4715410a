/**
 * Idempotency keys of reservations: a client that lost the response to a reservation sends it
 * again under the same key and gets the same space, never a second one.
 *
 * Which space a key made is recorded in the daemon's database (for a day) as soon as the
 * ledger holds the reservation, so it survives a restart. The response itself carries the
 * space key wrapped to the owner, which the daemon never keeps on disk (see migration 1): it is
 * kept in memory only, so a retry after a restart of the daemon is refused with `conflict`
 * naming the space (its owner destroys it and reserves again), rather than answered with a
 * second space.
 */
import { createHash } from 'node:crypto';
import { OcsError, type CreateSpaceResponse } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Database } from '../state/index.js';

export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;
/**
 * Responses kept in memory per principal at most; a principal's oldest go first (their spaces
 * stay recorded). Per principal, so no caller can evict another's answers by reserving a lot:
 * the store holds at most this many for each principal its issuers vouch for.
 */
export const MAX_IN_MEMORY_PER_PRINCIPAL = 1_000;

interface Held {
  hash: string;
  at: number;
  result: Promise<CreateSpaceResponse>;
}

export class ReservationKeys {
  /** principal → (key → held), each inner map in insertion (age) order. */
  private readonly mem = new Map<string, Map<string, Held>>();
  private readonly q;

  constructor(
    db: Database,
    private readonly clock: Clock,
    /** A space that failed or is gone frees its key for a new attempt. */
    private readonly live: (spaceId: string) => boolean,
  ) {
    this.q = {
      get: db.prepare<[string, string], { request_sha256: string; space_id: string }>(
        'SELECT request_sha256, space_id FROM reservation_keys WHERE principal = ? AND idem_key = ?',
      ),
      put: db.prepare(
        'INSERT OR REPLACE INTO reservation_keys (principal, idem_key, request_sha256, space_id, created_at) VALUES (?, ?, ?, ?, ?)',
      ),
      drop: db.prepare('DELETE FROM reservation_keys WHERE principal = ? AND idem_key = ?'),
      sweep: db.prepare('DELETE FROM reservation_keys WHERE created_at < ?'),
    };
  }

  /**
   * Runs `create` once for this principal's key and request. `create` must call `reserved(id)`
   * as soon as the space has an id (before any slow step). A retry of the same request gets the
   * first one's response (awaiting it if it is still running): `replayed` says so. Another
   * request under the same key is a conflict.
   */
  async once(
    principal: string,
    key: string,
    request: Uint8Array,
    create: (reserved: (spaceId: string) => void) => Promise<CreateSpaceResponse>,
  ): Promise<{ response: CreateSpaceResponse; replayed: boolean }> {
    const now = this.clock.now();
    this.sweep(now);
    const hash = createHash('sha256').update(request).digest('hex');
    let mine = this.mem.get(principal);
    const held = mine?.get(key);
    if (held) {
      if (held.hash !== hash) throw reused();
      return { response: await held.result, replayed: true };
    }
    const row = this.q.get.get(principal, key);
    if (row) {
      if (row.request_sha256 !== hash) throw reused();
      if (this.live(row.space_id))
        throw new OcsError(
          'conflict',
          "this key's reservation was made before the node restarted; its wrapped key went to that request only and is not kept: destroy the space and reserve again under a new key",
          { spaceId: row.space_id },
        );
      this.q.drop.run(principal, key);
    }
    const result = create((spaceId) => this.q.put.run(principal, key, hash, spaceId, now));
    if (!mine) this.mem.set(principal, (mine = new Map()));
    mine.set(key, { hash, at: now, result });
    if (mine.size > MAX_IN_MEMORY_PER_PRINCIPAL) mine.delete(mine.keys().next().value!);
    try {
      return { response: await result, replayed: false };
    } catch (err) {
      // Nothing was made (the service rolled back): the key may be used again.
      mine.delete(key);
      this.q.drop.run(principal, key);
      throw err;
    }
  }

  private sweep(now: number): void {
    this.q.sweep.run(now - IDEMPOTENCY_TTL_MS);
    for (const [principal, mine] of this.mem) {
      for (const [k, h] of mine) {
        if (h.at >= now - IDEMPOTENCY_TTL_MS) break; // insertion order is age order
        mine.delete(k);
      }
      if (mine.size === 0) this.mem.delete(principal);
    }
  }
}

const reused = () =>
  new OcsError('conflict', 'this idempotency key was used for another request', { field: 'idempotency-key' });
