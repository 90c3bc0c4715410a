/**
 * What each space runs, as the broker granted it: volumes, containers and VMs with the share of
 * the space they hold. Like the capacity ledger, the budget is summed from these rows inside the
 * BEGIN IMMEDIATE transaction that inserts one, so no two requests of a space can both take the
 * last of it.
 */
import { OcsError } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Database } from './db.js';
import { ClockedStore, resourceColumns } from './store.js';

export type WorkloadKind = 'volume' | 'container' | 'vm';

/** The four dimensions a workload holds of its space. */
export interface Share {
  cpuMillicores: number;
  memoryBytes: number;
  storageBytes: number;
  pids: number;
}

export interface WorkloadRow extends Share {
  id: string;
  spaceId: string;
  kind: WorkloadKind;
  name: string;
  /** The accepted request (JSON-parsed). */
  spec: unknown;
  state: 'creating' | 'ready';
  createdAt: number;
  /** Containers and VMs: the address on the space's network the daemon gave it (null before networks had them). */
  address: string | null;
  /**
   * When its removal began (null: it is not being removed). Set before the engine is asked, so
   * a daemon killed in the middle of a delete finishes it at its next start (reconcile).
   */
  removingSince: number | null;
}

/** What a space may hold in all; `pids` undefined = the space has no pids limit. */
export interface Budget {
  cpuMillicores: number;
  memoryBytes: number;
  storageBytes: number;
  pids?: number;
}

interface Raw {
  id: string;
  space_id: string;
  kind: WorkloadKind;
  name: string;
  cpu_millicores: number;
  memory_bytes: number;
  storage_bytes: number;
  pids: number;
  spec: string;
  state: 'creating' | 'ready';
  created_at: number;
  address: string | null;
  removing_since: number | null;
}

const DIMENSIONS = ['cpuMillicores', 'memoryBytes', 'storageBytes', 'pids'] as const;

function fromRaw(r: Raw): WorkloadRow {
  return {
    id: r.id,
    spaceId: r.space_id,
    kind: r.kind,
    name: r.name,
    ...resourceColumns(r),
    spec: JSON.parse(r.spec) as unknown,
    state: r.state,
    createdAt: r.created_at,
    address: r.address ?? null,
    removingSince: r.removing_since ?? null,
  };
}

export class WorkloadsRepo extends ClockedStore {
  private readonly stmt;

  constructor(db: Database, opts: { clock?: Clock } = {}) {
    super(db, opts.clock);
    this.stmt = {
      sum: db.prepare(
        `SELECT coalesce(sum(cpu_millicores), 0) AS cpuMillicores, coalesce(sum(memory_bytes), 0) AS memoryBytes,
                coalesce(sum(storage_bytes), 0) AS storageBytes, coalesce(sum(pids), 0) AS pids
         FROM workloads WHERE space_id = ?`,
      ),
      count: db.prepare('SELECT kind, count(*) AS n FROM workloads WHERE space_id = ? GROUP BY kind'),
      insert: db.prepare(
        `INSERT INTO workloads (id, space_id, kind, name, cpu_millicores, memory_bytes, storage_bytes, pids, spec, state, created_at, address)
         VALUES (@id, @spaceId, @kind, @name, @cpuMillicores, @memoryBytes, @storageBytes, @pids, @spec, 'creating', @createdAt, @address)`,
      ),
      byName: db.prepare('SELECT * FROM workloads WHERE space_id = ? AND kind = ? AND (name = ? OR id = ?)'),
      list: db.prepare('SELECT * FROM workloads WHERE space_id = ? AND kind = ? ORDER BY created_at, id'),
      listSpace: db.prepare('SELECT * FROM workloads WHERE space_id = ? ORDER BY created_at, id'),
      listAll: db.prepare('SELECT * FROM workloads ORDER BY space_id, created_at, id'),
      ready: db.prepare(
        `UPDATE workloads SET state = 'ready', spec = coalesce(?, spec) WHERE id = ? AND state = 'creating'`,
      ),
      addresses: db.prepare('SELECT address FROM workloads WHERE space_id = ? AND address IS NOT NULL').pluck(),
      remove: db.prepare('DELETE FROM workloads WHERE id = ?'),
      removing: db.prepare('UPDATE workloads SET removing_since = coalesce(removing_since, ?) WHERE id = ?'),
      removeSpace: db.prepare('DELETE FROM workloads WHERE space_id = ?'),
    };
  }

  /** What the space's workloads hold now, summed. */
  used(spaceId: string): Share {
    return this.stmt.sum.get(spaceId) as Share;
  }

  counts(spaceId: string): Record<WorkloadKind, number> {
    const out: Record<WorkloadKind, number> = { volume: 0, container: 0, vm: 0 };
    for (const r of this.stmt.count.all(spaceId) as { kind: WorkloadKind; n: number }[]) out[r.kind] = r.n;
    return out;
  }

  /**
   * Inserts a `creating` row if its share fits in what the space has left, in one write
   * transaction. `budget_exceeded` names the first dimension that does not fit; `conflict` when
   * the space already has a workload of that kind and name. With `addresses`, the workload gets
   * the first of them no other workload of the space holds (`budget_exceeded` on `addresses` when
   * none is left), in the same transaction.
   */
  reserve(
    budget: Budget,
    w: { id: string; spaceId: string; kind: WorkloadKind; name: string; spec: unknown } & Share,
    opts: { addresses?: readonly string[] } = {},
  ): WorkloadRow {
    return this.db
      .transaction(() => {
        if (this.stmt.byName.get(w.spaceId, w.kind, w.name, w.name)) {
          throw new OcsError('conflict', `this space already has a ${w.kind} named ${w.name}`, {
            kind: w.kind,
            name: w.name,
          });
        }
        const used = this.used(w.spaceId);
        for (const d of DIMENSIONS) {
          const limit = budget[d];
          if (limit === undefined || w[d] === 0) continue;
          const available = Math.max(0, limit - used[d]);
          if (w[d] > available) {
            throw new OcsError('budget_exceeded', `not enough ${d} left in this space`, {
              resource: d,
              requested: w[d],
              available,
            });
          }
        }
        let address: string | null = null;
        if (opts.addresses) {
          const held = new Set(this.stmt.addresses.all(w.spaceId) as string[]);
          address = opts.addresses.find((a) => !held.has(a)) ?? null;
          if (address === null)
            throw new OcsError('budget_exceeded', `no address is left on the space's network for another ${w.kind}`, {
              resource: 'addresses',
              requested: 1,
              available: 0,
            });
        }
        const createdAt = this.clock.now();
        this.stmt.insert.run({ ...w, spec: JSON.stringify(w.spec), createdAt, address });
        return fromRaw(this.stmt.byName.get(w.spaceId, w.kind, w.name, w.name) as Raw);
      })
      .immediate();
  }

  /**
   * Records the workloads a restored space brings in its storage, ready as they were: their
   * shares were checked against the space's resources before it was reserved.
   */
  insertRestored(
    rows: readonly ({ id: string; spaceId: string; kind: WorkloadKind; name: string; spec: unknown } & Share)[],
  ): void {
    this.db
      .transaction(() => {
        const createdAt = this.clock.now();
        for (const w of rows) {
          this.stmt.insert.run({ ...w, spec: JSON.stringify(w.spec), createdAt, address: null });
          this.stmt.ready.run(null, w.id);
        }
      })
      .immediate();
  }

  /**
   * The workload's address on the space's network: the one it holds, or the first of
   * `addresses` no other workload of the space holds, recorded now (a restored workload gets
   * one of this node's network at its space's first unlock).
   */
  assignAddress(id: string, addresses: readonly string[]): string {
    return this.db
      .transaction(() => {
        const r = this.db.prepare('SELECT space_id, address FROM workloads WHERE id = ?').get(id) as
          { space_id: string; address: string | null } | undefined;
        if (!r) throw new OcsError('not_found', 'no such workload');
        if (r.address !== null) return r.address;
        const held = new Set(this.stmt.addresses.all(r.space_id) as string[]);
        const address = addresses.find((a) => !held.has(a));
        if (address === undefined)
          throw new OcsError('budget_exceeded', "no address is left on the space's network", {
            resource: 'addresses',
            requested: 1,
            available: 0,
          });
        this.db.prepare('UPDATE workloads SET address = ? WHERE id = ?').run(address, id);
        return address;
      })
      .immediate();
  }

  /** Flips a `creating` row to `ready`, optionally recording what the host said (e.g. a path). */
  markReady(id: string, spec?: unknown): void {
    this.stmt.ready.run(spec === undefined ? null : JSON.stringify(spec), id);
  }

  /** By owner's name or by id; `not_found` otherwise (also for another space's workload). */
  get(spaceId: string, kind: WorkloadKind, nameOrId: string): WorkloadRow {
    const r = this.stmt.byName.get(spaceId, kind, nameOrId, nameOrId) as Raw | undefined;
    if (!r) throw new OcsError('not_found', `no ${kind} ${nameOrId} in this space`, { [kind]: nameOrId });
    return fromRaw(r);
  }

  find(spaceId: string, kind: WorkloadKind, nameOrId: string): WorkloadRow | undefined {
    const r = this.stmt.byName.get(spaceId, kind, nameOrId, nameOrId) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  list(spaceId: string, kind?: WorkloadKind): WorkloadRow[] {
    const rows = (kind ? this.stmt.list.all(spaceId, kind) : this.stmt.listSpace.all(spaceId)) as Raw[];
    return rows.map(fromRaw);
  }

  listAll(): WorkloadRow[] {
    return (this.stmt.listAll.all() as Raw[]).map(fromRaw);
  }

  remove(id: string): void {
    this.stmt.remove.run(id);
  }

  /** Marks the workload as being removed (its share stays counted until `remove`). */
  markRemoving(id: string): void {
    this.stmt.removing.run(this.clock.now(), id);
  }

  removeSpace(spaceId: string): void {
    this.stmt.removeSpace.run(spaceId);
  }
}
