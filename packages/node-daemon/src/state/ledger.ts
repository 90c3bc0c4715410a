/**
 * The capacity ledger: what this node may still promise. Capacity is never counted in memory;
 * it is summed from the space records inside the very transaction that inserts a new one, so
 * neither concurrent requests nor several processes sharing the file can overcommit.
 */
import { OcsError } from '@ocs/protocol';
import type { Resources, SpaceState } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Database } from './db.js';
import { ClockedStore } from './store.js';
import { checkNewSpace, insertSpace } from './spaces-repo.js';
import { isStanding } from './space-states.js';
import type { NewSpace, SpaceRow } from './spaces-repo.js';

export interface LedgerOptions {
  /**
   * What spaces may use in total: the detected machine minus the farmer's reserve. Without
   * `pids` the node does not limit processes and the ledger does not count them; without
   * `ports` the node publishes none (a space may reserve none).
   */
  allocatable: Resources;
  clock?: Clock;
}

const DIMENSIONS = ['cpuMillicores', 'memoryBytes', 'storageBytes', 'pids', 'ports'] as const;
type Dimension = (typeof DIMENSIONS)[number];

/**
 * Spaces count against capacity from their insert until they are released (a failed create
 * rolled back) or destroyed. A failed space whose host objects may still exist keeps counting
 * until someone releases it: refusing a request is cheaper than overcommitting a machine.
 */
const HELD = `released_at IS NULL AND state <> 'destroyed'`;

export class Ledger extends ClockedStore {
  private readonly allocatable: Resources;
  private readonly sumStmt;

  constructor(db: Database, opts: LedgerOptions) {
    super(db, opts.clock);
    for (const d of DIMENSIONS) {
      const v = opts.allocatable[d];
      if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0))
        throw new Error(`allocatable.${d} must be a non-negative integer`);
    }
    this.allocatable = { ...opts.allocatable };
    // BigInt sums: SQLite adds exactly in 64 bits, and so must the comparison (a petabyte-scale
    // storage sum is past 2^53).
    this.sumStmt = db
      .prepare(
        `SELECT coalesce(sum(cpu_millicores), 0) AS cpuMillicores, coalesce(sum(memory_bytes), 0) AS memoryBytes,
                coalesce(sum(storage_bytes), 0) AS storageBytes, coalesce(sum(pids), 0) AS pids,
                coalesce(sum(ports), 0) AS ports
         FROM spaces WHERE ${HELD}`,
      )
      .safeIntegers(true);
  }

  /**
   * Checks that `space` fits in what is left and inserts it (with a fresh uid), in one
   * BEGIN IMMEDIATE transaction: the write lock is taken before the sum is read, so of two
   * processes racing for the last capacity exactly one sees it free.
   * @returns the inserted record.
   * @throws OcsError capacity_exceeded with `{ resource, requested, available }` for the first
   *   dimension that does not fit (or `resource: 'uids'`); invalid_request when the node limits
   *   pids and the space asks for no limit; conflict when the id exists.
   */
  reserve(space: NewSpace): SpaceRow {
    checkNewSpace(space);
    this.checkPids(space.pids);
    return this.db
      .transaction(() => {
        this.checkFits(this.sumStmt.get() as Record<Dimension, bigint>, space);
        return insertSpace(this.db, space, this.clock.now());
      })
      .immediate();
  }

  /**
   * The refusals `reserve` would give now, without reserving: cheap, so a request that cannot
   * fit is refused before anything costlier (a signature's nonce, host work). Advisory only:
   * `reserve` decides, in its transaction.
   */
  check(space: Pick<NewSpace, 'cpuMillicores' | 'memoryBytes' | 'storageBytes' | 'pids' | 'ports'>): void {
    this.checkPids(space.pids);
    this.checkFits(this.sumStmt.get() as Record<Dimension, bigint>, space);
  }

  private checkPids(pids: number | null | undefined): void {
    if (this.allocatable.pids !== undefined && pids == null) {
      throw new OcsError('invalid_request', 'this node limits processes: the space must ask for a pids limit', {
        field: '/resources/pids',
      });
    }
  }

  private checkFits(
    used: Record<Dimension, bigint>,
    space: Pick<NewSpace, 'cpuMillicores' | 'memoryBytes' | 'storageBytes' | 'pids' | 'ports'>,
  ): void {
    for (const d of DIMENSIONS) {
      const requested = space[d] ?? 0;
      // A node that publishes no ports has none to give; other dimensions without a limit are not counted.
      const limit = this.allocatable[d] ?? (d === 'ports' && requested > 0 ? 0 : undefined);
      if (limit === undefined) continue;
      const available = BigInt(limit) - used[d];
      if (BigInt(requested) > available) {
        throw new OcsError('capacity_exceeded', `not enough ${d} left on this node`, {
          resource: d,
          requested,
          available: Number(available > 0n ? available : 0n),
        });
      }
    }
  }

  /**
   * Stops counting a space against capacity, once nothing of it remains on the host: after a
   * failed create was rolled back, or when it is destroyed (a destroyed space is released
   * anyway). Idempotent.
   * @throws OcsError not_found; conflict for a space that may still use the machine.
   */
  release(id: string): void {
    this.db
      .transaction(() => {
        const row = this.db.prepare('SELECT state FROM spaces WHERE id = ?').get(id) as
          { state: SpaceState } | undefined;
        if (!row) throw new OcsError('not_found', 'no such space', { id });
        if (isStanding(row.state)) {
          throw new OcsError('conflict', `a ${row.state} space still holds its capacity`, { id, state: row.state });
        }
        this.db
          .prepare('UPDATE spaces SET released_at = coalesce(released_at, ?) WHERE id = ?')
          .run(this.clock.now(), id);
      })
      .immediate();
  }

  /** What the spaces holding capacity reserved, summed (`pids` and `ports` only when the node counts them). */
  used(): Resources {
    const u = this.sumStmt.get() as Record<Dimension, bigint>;
    return this.shape((d) => Number(u[d]));
  }

  /** Allocatable minus used, never negative (the allocatable may shrink under existing spaces). */
  available(): Resources {
    const u = this.sumStmt.get() as Record<Dimension, bigint>;
    return this.shape((d) => {
      const left = BigInt(this.allocatable[d] ?? 0) - u[d];
      return Number(left > 0n ? left : 0n);
    });
  }

  private shape(value: (d: Dimension) => number): Resources {
    const out: Resources = {
      cpuMillicores: value('cpuMillicores'),
      memoryBytes: value('memoryBytes'),
      storageBytes: value('storageBytes'),
    };
    if (this.allocatable.pids !== undefined) out.pids = value('pids');
    if (this.allocatable.ports !== undefined) out.ports = value('ports');
    return out;
  }
}
