/**
 * What the workload kinds share: their dependencies (those of the broker's gate too), and the
 * few lookups every kind needs (the space's storage layout, its own container engine, the VM
 * driver), each in one place.
 */
import {
  Revert,
  type CgroupDriver,
  type ContainerDriver,
  type EngineSpace,
  type StorageDriver,
  type VmDriver,
} from '@ocs/host';
import { OcsError, isOcsError, type IssuerKeySets } from '@ocs/protocol';
import type { AuditLog, Budget, PortRange, PortsRepo, SpaceRow, SpacesRepo, WorkloadsRepo } from '../state/index.js';
import type { NodeEgress } from '../spaces/egress-policy.js';
import type { RefusalLog } from '../state/refusals.js';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import { spaceCgroupLayout, spaceDataLayout } from '../spaces/layout.js';
import { resourcesOf } from '../spaces/service.js';
import type { SpaceNetworks } from '../spaces/networks.js';

export interface WorkloadDeps {
  spaces: SpacesRepo;
  workloads: WorkloadsRepo;
  audit: AuditLog;
  /** Refusals: counted, and chained under the space within its budget. */
  refusals: RefusalLog;
  storage: StorageDriver;
  cgroups: CgroupDriver;
  /** The spaces' container engines; absent: the node runs no containers (`unavailable`). */
  containers?: ContainerEngines | undefined;
  /** The spaces' firewall rules; absent only where the node runs no workloads. */
  networks?: SpaceNetworks | undefined;
  /** The node's published ports. */
  ports: PortsRepo;
  /** The farmer's egress policy, which an owner's request must stay within. */
  nodeEgress: NodeEgress;
  /** The resolvers in every container's resolv.conf (the node's policy lets spaces with egress reach them). */
  dns?: string[] | undefined;
  /** The farmer's range of published ports; absent: the node publishes none. */
  portRange?: PortRange | undefined;
  /**
   * The ports host processes hold now (TCP listeners and bound UDP sockets), which are never
   * published. Default: the kernel's socket tables (`hostPortsInUse`).
   */
  portsInUse?: () => Promise<ReadonlySet<number>>;
  /** A space's subordinate ids and subnet as derived from its uid's slot (recorded at first use). */
  workloadIds(uid: number): { idMap: { base: number; size: number }; subnet: string };
  /** How long lock and expiry let containers and VMs shut down before they are killed. */
  stopGraceSeconds?: number;
  /** Absent: the node runs no VMs (`unavailable`). */
  vms?: VmDriver | undefined;
  cgroupParent: string;
  logger: Logger;
  clock: Clock;
  /**
   * The uid QEMU runs as for a space whose API process has `spaceUid`: a second uid of the
   * space's own, so a guest that escaped QEMU cannot reach the broker socket (which answers
   * the API process's uid), nor another space's VMs.
   */
  workloadUid(spaceUid: number): number;
  /** A container that names no pids limit gets this many (bounded by what the space has left). */
  defaultContainerPids?: number;
  /** The remote issuers' keys as the daemon holds them now (the space process has no network). */
  issuerKeys(): IssuerKeySets;
}

/** The spaces' container engines, as the broker uses them (`SpaceEngines` on a real node). */
export interface ContainerEngines {
  /** The space's container driver, its engine started if it is not serving. */
  driver(space: EngineSpace): Promise<ContainerDriver>;
  /** Stops the space's containers and its engine; returns the ids that were running. */
  stop(space: EngineSpace): Promise<string[]>;
  /** Kills everything of the space's engine (its store goes with the space's storage). */
  remove(space: Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'>): Promise<void>;
  /** Spaces whose engine may still run here (after a crash, before reconciliation). */
  spacesWithRunDirs(): Promise<string[]>;
  /** A restored space's store made its own: another space's engine database, names and containers taken apart. */
  adoptStore(
    space: EngineSpace,
    from: { spaceId: string; arrival: string },
    containerIds: readonly string[],
  ): Promise<void>;
  /** A restored container's writable layer and log, put into the container made anew from its record. */
  transplant(space: EngineSpace, fromContainerId: string, containerId: string): Promise<void>;
}

export class WorkloadContext {
  private readonly mountpoints = new Map<string, string>();

  constructor(readonly d: WorkloadDeps) {}

  /** The space's own engine (started if it is not serving), its store in the space. */
  async containerDriver(s: SpaceRow): Promise<ContainerDriver> {
    if (!this.d.containers) throw new OcsError('unavailable', 'this node runs no containers');
    const space = this.engineSpace(s, (await this.data(s)).root);
    // The subnet is recorded now (first use): the space's rules go in before any container runs.
    await this.d.networks?.ensure(s);
    return this.d.containers.driver(space);
  }

  engineGroups(spaceId: string): Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'> {
    const l = spaceCgroupLayout(this.d.cgroupParent, spaceId);
    return { spaceId, engineGroup: l.engine, containersGroup: l.containers };
  }

  engineSpace(s: SpaceRow, mountpoint: string): EngineSpace {
    return {
      ...this.engineGroups(s.id),
      dataDir: spaceDataLayout(mountpoint).engine,
      ...this.workloadIds(s),
    };
  }

  /** The space's recorded subordinate ids and subnet (recorded at first use). */
  workloadIds(s: SpaceRow): { idMap: { base: number; size: number }; subnet: string } {
    return this.d.spaces.workloadIds(s.id, this.d.workloadIds(s.uid));
  }

  /** The space's networks and rules; `unavailable` on a node that runs no workloads. */
  network(): SpaceNetworks {
    if (!this.d.networks) throw new OcsError('unavailable', 'this node runs no workload networks');
    return this.d.networks;
  }

  range(): PortRange {
    if (!this.d.portRange) throw new OcsError('unavailable', 'this node publishes no ports');
    return this.d.portRange;
  }

  vmDriver(): VmDriver {
    if (!this.d.vms) throw new OcsError('unavailable', 'this node runs no VMs');
    return this.d.vms;
  }

  /** The space's storage layout; the mountpoint is asked of the driver once per space. */
  async data(s: SpaceRow): Promise<ReturnType<typeof spaceDataLayout>> {
    let mp = this.mountpoints.get(s.id);
    if (!mp) {
      mp = (await this.d.storage.info(s.id)).mountpoint;
      this.mountpoints.set(s.id, mp);
    }
    return spaceDataLayout(mp);
  }

  /** Forgets what is cached of a space that is going away. */
  forget(spaceId: string): void {
    this.mountpoints.delete(spaceId);
  }

  /** A host object already gone is what a removal wanted. */
  ignoreGone(err: unknown): void {
    if (isOcsError(err) && err.code === 'not_found') return;
    throw err;
  }

  /** Whether the host has what `ask` asks about: `not_found` is no, any other failure a failure. */
  async exists(ask: () => Promise<unknown>): Promise<boolean> {
    return ask().then(
      () => true,
      (err: unknown) => {
        this.ignoreGone(err);
        return false;
      },
    );
  }

  /** The undo stack of one multi-step host change, whose failed steps are logged. */
  revert(spaceId: string, id: string): Revert {
    return new Revert((err, step) => this.d.logger.warn({ err, spaceId, id, step }, 'undo failed'));
  }
}

/** What a space's workloads may hold: its reservation, but for the node's ports (not a workload's share). */
export function budgetOf(s: SpaceRow): Budget {
  const { ports: _ports, ...budget } = resourcesOf(s);
  return budget;
}
