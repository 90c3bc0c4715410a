/**
 * Where a space lives on the host. One function so the service, the supervisor, the broker and
 * reconciliation can never disagree about a path.
 */
import { join } from 'node:path';

/**
 * Every component carries a `.` suffix because libvirt rewrites dotless components of a VM's
 * cgroup partition (`sp_x` would become `sp_x.partition`, beside the space instead of in it);
 * with these names the VMs' partition lies inside the space's own group, under its limits.
 */
export function spaceCgroupLayout(parent: string, spaceId: string) {
  const space = `${parent}/${spaceId}${SPACE_CGROUP_SUFFIX}`;
  const workloads = `${space}/workloads.slice`;
  return {
    space,
    api: `${space}/api.slice`,
    workloads,
    vms: `${workloads}/vms.partition`,
    // podman (cgroupfs) refuses a parent whose name ends in `.slice`; these have no suffix.
    engine: `${workloads}/engine`,
    containers: `${workloads}/containers`,
  };
}

export const SPACE_CGROUP_SUFFIX = '.space';

/** The space id a child of the cgroup parent belongs to, or undefined for a group that is not a space's. */
export function spaceIdOfCgroup(child: string): string | undefined {
  return child.endsWith(SPACE_CGROUP_SUFFIX) ? child.slice(0, -SPACE_CGROUP_SUFFIX.length) : undefined;
}

export function spaceRunDir(runDir: string, spaceId: string) {
  const dir = join(runDir, 'spaces', spaceId);
  return {
    dir,
    /**
     * Where the daemon connects to the space's API: its listening socket, renamed out of the
     * space's own directory into a root-only one once it is ready, so a link the space plants
     * later cannot redirect the daemon (root) anywhere.
     */
    handedApiSocket: join(runDir, 'api', `${spaceId}.sock`),
    apiSocket: join(dir, 'api.sock'),
    /**
     * Where daemons before the broker's socket pair bound the broker; removed if a crash left it.
     * The broker now has no name in the file system (`broker/server.ts`).
     */
    legacyBrokerSocket: join(dir, 'broker.sock'),
    config: join(dir, 'config.json'),
  };
}

/**
 * Where things live inside a space's encrypted storage (`mountpoint` = the storage's data
 * directory). The mountpoint itself is root's (0711), so the space cannot rename or replace
 * what the node keeps beside its own home:
 *
 *   space/          the space process's home (its uid, 0700): state/ (its database), files/ (uploads)
 *   node/keys/      per-volume keys, encrypted at rest by the space key (root, 0700)
 *   node/spool/     image tarballs being checked before the engine sees them (root, 0700)
 *   node/vms/<id>/  VM disks and console logs (root dir; the disk belongs to the space's uid, QEMU runs as it)
 *   node/records/   what the owner asked for, per workload (command, environment, boot files; root, 0700)
 *   node/engine/    the space's container engine: image layers, containers, their logs (root, 0700)
 *   node/running-at-lock.json  what ran when the space was locked, started again by unlock
 */
export function spaceDataLayout(mountpoint: string) {
  const space = join(mountpoint, 'space');
  const node = join(mountpoint, 'node');
  return {
    root: mountpoint,
    space,
    state: join(space, 'state'),
    files: join(space, 'files'),
    node,
    keys: join(node, 'keys'),
    spool: join(node, 'spool'),
    vms: join(node, 'vms'),
    engine: join(node, 'engine'),
    records: join(node, 'records'),
    runningAtLock: join(node, 'running-at-lock.json'),
  };
}

export interface SpaceLimitsInput {
  cpuMillicores: number;
  memoryBytes: number;
  pids: number | null;
}

/**
 * Limits of a space's three groups. Memory and pids bound the whole space, its API process
 * included (the tenant pays for it). CPU: the reservation goes to the workloads; the API process
 * gets a control-plane allowance of its own so that a 0.1-core space still starts its API in well
 * under a second. The space-level quota is the sum, so neither can take the other's share.
 */
export function spaceCgroupLimits(row: SpaceLimitsInput, apiCpuMillicores: number) {
  const common = { memoryBytes: row.memoryBytes, ...(row.pids ? { pids: row.pids } : {}) };
  return {
    space: { ...common, cpuMillicores: row.cpuMillicores + apiCpuMillicores },
    api: { ...common, cpuMillicores: apiCpuMillicores },
    workloads: { ...common, cpuMillicores: row.cpuMillicores },
  };
}

/** Subordinate ids per space: container uid/gid 0 is the first of them on the host. */
export const SUBIDS_PER_SPACE = 65_536;

/**
 * The space's subordinate id range and container subnet, both derived from its slot (its uid's
 * offset in the uid range), which no other live space holds: two spaces never share either.
 */
export function spaceWorkloadIds(
  o: { uidBase: number; subidBase: number; subnetPool: string },
  uid: number,
): { idMap: { base: number; size: number }; subnet: string } {
  const slot = uid - o.uidBase;
  const [addr, prefix] = o.subnetPool.split('/') as [string, string];
  const start = addr.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const n = start + slot * SUBNET_SIZE;
  const ip = [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
  void prefix;
  return { idMap: { base: o.subidBase + slot * SUBIDS_PER_SPACE, size: SUBIDS_PER_SPACE }, subnet: `${ip}/26` };
}

/** Addresses per space network (a /26: 61 containers). */
export const SUBNET_SIZE = 64;
