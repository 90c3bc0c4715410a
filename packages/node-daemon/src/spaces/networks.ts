/**
 * The spaces' networks as the node's firewall holds them: a space has rules from the moment its
 * subnet is recorded (its first workload) until it is destroyed, and after a restart the kernel
 * is made to hold exactly the rules of the spaces the records say are live (a `kill -9` leaves
 * the tables in the kernel; a space destroyed meanwhile loses its table, a live one whose table
 * was lost gets it back).
 */
import { bridgeName, type NetworkFirewall, type SpaceNetwork } from '@ocs/host';
import type { SpaceRow, SpacesRepo } from '../state/index.js';
import type { Logger } from '../logger.js';

/** A space whose records say it may still hold workloads. */
const LIVE = new Set(['creating', 'active', 'locked', 'expired']);

export class SpaceNetworks {
  /** Spaces whose table this process made or checked since it started. */
  private readonly applied = new Set<string>();

  constructor(
    private readonly firewall: NetworkFirewall,
    private readonly repo: SpacesRepo,
    private readonly logger: Logger,
  ) {}

  /** The space's network as its rules are made from it; undefined before it has a subnet. */
  of(s: SpaceRow): SpaceNetwork | undefined {
    if (s.subnet === null) return undefined;
    return { spaceId: s.id, bridge: bridgeName(s.id), subnet: s.subnet, egress: { mode: 'none' }, published: [] };
  }

  /** At start: the rules of the live spaces with a network, none of a space of ours not live. */
  async reconcile(): Promise<{ removed: string[] }> {
    const rows = this.repo.list({});
    const ours = new Set(rows.map((r) => r.id));
    const live = rows.filter((r) => LIVE.has(r.state)).flatMap((r) => this.of(r) ?? []);
    // A table of a space this database never knew is another daemon's (tests run several on one host).
    const report = await this.firewall.reconcile(live, { ours: (id) => ours.has(id) });
    for (const s of live) this.applied.add(s.spaceId);
    if (report.removed.length > 0) this.logger.warn(report, 'removed the network rules of spaces that are gone');
    return report;
  }

  /** Before the space's first workload starts: its rules, unless they are in already. */
  async ensure(s: SpaceRow): Promise<void> {
    if (this.applied.has(s.id)) return;
    const n = this.of(this.repo.get(s.id) ?? s);
    if (!n) return;
    await this.firewall.apply(n);
    this.applied.add(s.id);
  }

  /** When the space is destroyed (after its workloads are gone). */
  async remove(spaceId: string): Promise<void> {
    await this.firewall.remove(spaceId, bridgeName(spaceId));
    this.applied.delete(spaceId);
  }
}
