/**
 * The node's published ports: which port of the node forwards to which workload's port. A port
 * number of the farmer's range belongs to one publication at a time (TCP or UDP), so a space
 * holds at most the ports it reserved (`spaces.ports`, counted by the ledger) and the range
 * always has one free for a space under its reservation. Rows go with their workload (the table's
 * foreign key cascades), so a removed container never leaves a forward behind.
 */
import { OcsError } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Database } from './db.js';
import { ClockedStore } from './store.js';

export interface PublishedRow {
  hostPort: number;
  spaceId: string;
  protocol: 'tcp' | 'udp';
  workloadId: string;
  kind: 'container' | 'vm';
  name: string;
  address: string;
  port: number;
  createdAt: number;
}

export interface PortRange {
  first: number;
  last: number;
}

interface Raw {
  host_port: number;
  space_id: string;
  protocol: 'tcp' | 'udp';
  workload_id: string;
  kind: 'container' | 'vm';
  name: string;
  address: string;
  port: number;
  created_at: number;
}

const fromRaw = (r: Raw): PublishedRow => ({
  hostPort: r.host_port,
  spaceId: r.space_id,
  protocol: r.protocol,
  workloadId: r.workload_id,
  kind: r.kind,
  name: r.name,
  address: r.address,
  port: r.port,
  createdAt: r.created_at,
});

const SELECT = `SELECT p.host_port, p.space_id, p.protocol, p.workload_id, w.kind, w.name, w.address, p.port, p.created_at
  FROM published_ports p JOIN workloads w ON w.id = p.workload_id`;

export class PortsRepo extends ClockedStore {
  private readonly stmt;

  constructor(db: Database, opts: { clock?: Clock } = {}) {
    super(db, opts.clock);
    this.stmt = {
      list: db.prepare(`${SELECT} WHERE p.space_id = ? ORDER BY p.host_port`),
      get: db.prepare(`${SELECT} WHERE p.host_port = ?`),
      count: db.prepare('SELECT count(*) FROM published_ports WHERE space_id = ?').pluck(),
      taken: db.prepare('SELECT 1 FROM published_ports WHERE host_port = ?').pluck(),
      same: db
        .prepare('SELECT host_port FROM published_ports WHERE workload_id = ? AND protocol = ? AND port = ?')
        .pluck(),
      inRange: db.prepare('SELECT host_port FROM published_ports WHERE host_port BETWEEN ? AND ?').pluck(),
      insert: db.prepare(
        `INSERT INTO published_ports (host_port, space_id, protocol, workload_id, port, created_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      remove: db.prepare('DELETE FROM published_ports WHERE host_port = ? AND space_id = ?'),
    };
  }

  list(spaceId: string): PublishedRow[] {
    return (this.stmt.list.all(spaceId) as Raw[]).map(fromRaw);
  }

  /**
   * Publishes in one write transaction: `budget_exceeded` when the space holds all the ports it
   * reserved, `conflict` when the workload's port is published already or `hostPort` is taken,
   * `invalid_request` for a `hostPort` outside the range, `capacity_exceeded` when the range has
   * no free port (the farmer shrank it under the reservations). A port in `inUse` (held by a host
   * process) is never published: asked for, it is `conflict`; otherwise it is passed over.
   */
  publish(
    space: { id: string; ports: number },
    range: PortRange,
    p: { workloadId: string; protocol: 'tcp' | 'udp'; port: number; hostPort?: number; inUse?: ReadonlySet<number> },
  ): PublishedRow {
    return this.db
      .transaction(() => {
        const held = this.stmt.count.get(space.id) as number;
        if (held >= space.ports)
          throw new OcsError('budget_exceeded', 'the space publishes all the ports it reserved', {
            resource: 'ports',
            requested: 1,
            available: 0,
          });
        const same = this.stmt.same.get(p.workloadId, p.protocol, p.port) as number | undefined;
        if (same !== undefined)
          throw new OcsError('conflict', `that port is published already, on ${same}`, { hostPort: same });
        let hostPort = p.hostPort;
        if (hostPort !== undefined) {
          if (hostPort < range.first || hostPort > range.last)
            throw new OcsError('invalid_request', `hostPort must be in the node's range ${range.first}-${range.last}`, {
              field: '/hostPort',
            });
          if (this.stmt.taken.get(hostPort)) throw new OcsError('conflict', `port ${hostPort} is taken`);
          if (p.inUse?.has(hostPort))
            throw new OcsError('conflict', `port ${hostPort} is in use by a service of the node`, { hostPort });
        } else {
          // The lowest port of the range that is neither published nor held by the host.
          const taken = new Set(this.stmt.inRange.all(range.first, range.last) as number[]);
          for (let h = range.first; h <= range.last && hostPort === undefined; h++)
            if (!taken.has(h) && !p.inUse?.has(h)) hostPort = h;
          if (hostPort === undefined)
            throw new OcsError('capacity_exceeded', "no port of the node's range is free", {
              resource: 'ports',
              requested: 1,
              available: 0,
            });
        }
        this.stmt.insert.run(hostPort, space.id, p.protocol, p.workloadId, p.port, this.clock.now());
        return fromRaw(this.stmt.get.get(hostPort) as Raw);
      })
      .immediate();
  }

  /** `not_found` for a port the space does not publish (another space's included). */
  unpublish(spaceId: string, hostPort: number): void {
    if (this.stmt.remove.run(hostPort, spaceId).changes === 0)
      throw new OcsError('not_found', `this space does not publish port ${hostPort}`);
  }
}
