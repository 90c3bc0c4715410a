/** Resource limits of one cgroup, as the node daemon grants them to a space or a workload. */
export interface CgroupLimits {
  /**
   * CPU bandwidth in thousandths of a CPU (1000 = one full CPU), enforced as a quota per
   * 100 ms period. `readLimits` returns `Infinity` when the group has no quota.
   */
  cpuMillicores: number;
  /**
   * Memory (and, where the kernel accounts it, memory plus swap) in bytes. The kernel rounds
   * down to a whole page. `readLimits` returns `Infinity` when the group has no limit.
   */
  memoryBytes: number;
  /** Maximum number of tasks (processes and threads). Absent means no limit. */
  pids?: number;
}

/** What a cgroup consumes now, read from the kernel's counters. */
export interface CgroupUsage {
  /** Memory charged to the group and its descendants right now. */
  memoryBytes: number;
  /** Highest `memoryBytes` seen since the group was created, where the kernel tracks it. */
  memoryPeakBytes?: number;
  /** Tasks (processes and threads) in the group and its descendants. */
  pids: number;
  /** CPU time consumed, in nanoseconds, where the kernel accounts it. */
  cpuUsageNs?: number;
  /** Processes the kernel's OOM killer killed because this group hit its memory limit. */
  oomKills?: number;
}

/**
 * One way to drive the host's cgroups (v1 or v2). Every `path` is relative to the driver's
 * root, made of `/`-separated segments of `[A-Za-z0-9_.-]`, e.g. `"ocs/sp_123/api"`; anything
 * else is refused with `invalid_request` before the file system is touched.
 *
 * Processes live only in leaf groups: `addProcess` refuses a group that has child groups, and
 * `create` refuses to nest a group under one that holds processes. cgroup v2 demands this
 * once controllers are enabled; the v1 driver enforces it too so a layout that works on a v1
 * development machine also works on a v2 production node.
 */
export interface CgroupDriver {
  readonly version: 'v1' | 'v2';
  /** Creates the group (and missing parents), applies limits. Paths are relative, e.g. "ocs/sp_123/api". Idempotent. */
  create(path: string, limits?: CgroupLimits): Promise<void>;
  /** Replaces the group's limits; an absent `pids` removes the pids limit. */
  setLimits(path: string, limits: CgroupLimits): Promise<void>;
  /** Reads the limits back from the kernel's files (not from anything this driver remembers). */
  readLimits(path: string): Promise<CgroupLimits>;
  /** Current consumption of the group and its descendants. */
  usage(path: string): Promise<CgroupUsage>;
  /** Moves `pid` into the group, in every controller's hierarchy. */
  addProcess(path: string, pid: number): Promise<void>;
  /** Pids in this group only (not its descendants); empty when the group does not exist. */
  processes(path: string): Promise<number[]>;
  /** Whether the group exists (in any controller's hierarchy, for v1). */
  exists(path: string): Promise<boolean>;
  /** Direct child group names, for reconciliation; empty when the group does not exist. */
  children(path: string): Promise<string[]>;
  /** Kills every process in the group and its descendants (freeze, SIGKILL, thaw, wait until empty), then removes the groups bottom-up. Idempotent. */
  destroy(path: string): Promise<void>;
  /**
   * The group's absolute path in the hierarchy, as /proc/PID/cgroup names it, e.g.
   * "/ocs.slice/sp_123.space/workloads.slice/containers": what a space's engine is given as a
   * container's cgroup parent (cgroupfs) and libvirt as a VM's partition.
   */
  absolutePath(path: string): string;
}

/** Options shared by both drivers. */
export interface CgroupDriverOptions {
  /** How long `destroy` waits for killed processes to leave before failing. Default 10 s. */
  killTimeoutMs?: number;
}

/** cgroup v1 controllers this package manages. */
export type V1Controller = 'memory' | 'cpu' | 'cpuacct' | 'cpuset' | 'pids' | 'blkio' | 'devices' | 'freezer';
