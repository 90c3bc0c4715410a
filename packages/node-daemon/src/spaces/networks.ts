/**
 * The spaces' networks as the node's firewall holds them: a space has rules from the moment its
 * subnet is recorded (its first workload) until it is destroyed, replaced whenever what it
 * publishes or its egress changes, and after a restart the kernel is made to hold exactly the
 * rules of the spaces the records say are live (a `kill -9` leaves the tables in the kernel; a
 * space destroyed meanwhile loses its table, a live one whose table was lost gets it back).
 */
import {
  bridgeName,
  ipv4Range,
  NODE_TABLE,
  spaceOfTable,
  removeSpaceBridge,
  spaceSubnet,
  type NetworkFirewall,
  type SpaceNetwork,
} from '@ocs/host';
import type { PublishedPort, SpaceNetworkView } from '@ocs/protocol';
import { isLive, type PortRange, type PortsRepo, type SpaceRow, type SpacesRepo } from '../state/index.js';
import type { Logger } from '../logger.js';
import { effectiveEgress, type NodeEgress } from './egress-policy.js';

export interface SpaceNetworksOptions {
  firewall: NetworkFirewall;
  repo: SpacesRepo;
  ports: PortsRepo;
  /** The farmer's range of published ports. */
  range: PortRange;
  /** The farmer's egress policy: each space's egress is cut to it. */
  egress: NodeEgress;
  /** The uids a space's workloads run as outside a network namespace of their own (none sends from the host's). */
  workloadUids?: (row: SpaceRow) => { first: number; last: number }[];
  logger: Logger;
}

export class SpaceNetworks {
  /** Spaces whose table this process made or checked since it started. */
  private readonly applied = new Set<string>();

  constructor(private readonly o: SpaceNetworksOptions) {}

  /** The space's network as its rules are made from it; undefined before it has a subnet. */
  of(s: SpaceRow): SpaceNetwork | undefined {
    if (s.subnet === null) return undefined;
    return {
      spaceId: s.id,
      bridge: bridgeName(s.id),
      subnet: s.subnet,
      egress: effectiveEgress(this.o.egress, s.egress),
      published: this.o.ports
        .list(s.id)
        .map((p) => ({ protocol: p.protocol, hostPort: p.hostPort, address: p.address, port: p.port })),
      workloadUids: this.o.workloadUids?.(s) ?? [],
    };
  }

  /** What the space publishes, as its owner and the farmer see it. */
  published(spaceId: string): PublishedPort[] {
    return this.o.ports.list(spaceId).map((p) => ({
      hostPort: p.hostPort,
      protocol: p.protocol,
      target: { kind: p.kind, name: p.name },
      port: p.port,
      address: p.address,
      createdAt: new Date(p.createdAt).toISOString(),
    }));
  }

  view(s: SpaceRow): SpaceNetworkView {
    return {
      ...(s.subnet !== null ? { subnet: s.subnet } : {}),
      egress: s.egress,
      published: this.published(s.id),
      ports: { reserved: s.ports, first: this.o.range.first, last: this.o.range.last },
    };
  }

  /** The addresses a new container (or VM) of the space may get, in order. */
  addresses(subnet: string, kind: 'container' | 'vm'): string[] {
    const r = spaceSubnet(subnet)[kind === 'container' ? 'containers' : 'vms'];
    return ipv4Range(r.first, r.last);
  }

  /** At start: the rules of the live spaces with a network, none of a space of ours not live. */
  async reconcile(): Promise<{ removed: string[] }> {
    const rows = this.o.repo.list({});
    const ours = new Set(rows.map((r) => r.id));
    const live = rows.filter((r) => isLive(r.state)).flatMap((r) => this.of(r) ?? []);
    // A table of a space this database never knew is another daemon's (tests run several on one host).
    const report = await this.o.firewall.reconcile(live, { ours: (id) => ours.has(id) });
    for (const s of live) this.applied.add(s.spaceId);
    if (report.removed.length > 0) this.o.logger.warn(report, 'removed the network rules of spaces that are gone');
    return report;
  }

  /**
   * The watchdog's check: whether the kernel still holds the node's table and the table of every
   * live space with a network, each as this process wrote it. Anything else may flush the ruleset
   * while the daemon runs (Debian's own /etc/nftables.conf begins with `flush ruleset`: a restart
   * of nftables.service), or flush a chain or delete a rule of ours, which would leave spaces open
   * until the next start. If anything is missing or changed, the rules are made again from the
   * records (reconcile); returns what was ('node' for the node's table, or the space's id). The
   * rules are made again too, and nothing returned, when the node is on other networks than
   * when they were made (an address it got since): the new ones are denied to every space.
   */
  async restoreIfLost(): Promise<string[]> {
    const moved = this.o.firewall.nodeNetworksChanged();
    const live = this.o.repo
      .list({})
      .filter((r) => isLive(r.state))
      .flatMap((r) => this.of(r) ?? []);
    if (live.length === 0) return [];
    const present = new Set(await this.o.firewall.spaces());
    const missing = [
      ...((await this.o.firewall.installed()) ? [] : ['node']),
      ...live.filter((s) => !present.has(s.spaceId)).map((s) => s.spaceId),
    ];
    const changed = (await this.o.firewall.drifted())
      .map((table) => (table === NODE_TABLE ? 'node' : (spaceOfTable(table) ?? table)))
      .filter((id) => !missing.includes(id));
    if (missing.length === 0 && changed.length === 0 && !moved) return [];
    if (missing.length > 0 || changed.length > 0)
      this.o.logger.warn(
        { missing, changed },
        'network rules were removed or changed behind the daemon: making them again',
      );
    if (moved) this.o.logger.info("the node's networks changed: making the rules again to deny the new ones");
    await this.reconcile();
    return [...missing, ...changed];
  }

  /** Before the space's first workload starts: its rules, unless they are in already. */
  async ensure(s: SpaceRow): Promise<void> {
    if (!this.applied.has(s.id)) await this.update(s.id);
  }

  /** The space's rules made again from its records (after a publish, an unpublish, a change of egress). */
  async update(spaceId: string): Promise<void> {
    const row = this.o.repo.get(spaceId);
    const n = row && this.of(row);
    if (!n) return;
    await this.o.firewall.apply(n);
    this.applied.add(spaceId);
  }

  /** When the space is destroyed (after its workloads are gone). */
  async remove(spaceId: string): Promise<void> {
    await this.o.firewall.remove(spaceId, bridgeName(spaceId));
    this.applied.delete(spaceId);
    // Made by CNI or for a VM; neither removes it.
    await removeSpaceBridge(bridgeName(spaceId));
  }
}
