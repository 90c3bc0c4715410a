import { join } from 'node:path';
import type { CgroupDriver, CgroupDriverOptions, CgroupLimits, CgroupUsage, V1Controller } from './types.js';
import { CPU_PERIOD_US, parseCgroupPath, validateLimits, validatePid } from './validate.js';
import {
  childDirs,
  isDirectory,
  killPid,
  killUntilEmpty,
  mkdirOnce,
  parseBytes,
  parseKeyed,
  readOptional,
  readPids,
  readText,
  rmdirGroup,
  sleep,
  subtreeDeepestFirst,
  writeValue,
} from './fsutil.js';
import { KeyedLock } from '../keyed-lock.js';

/**
 * runc 1.1's default device rules (libcontainer/specconv `AllowedDevices`): null, zero, full,
 * random, urandom, tty, console, ptmx, /dev/pts/*, /dev/net/tun, and mknod (not open) of any
 * node. It is exactly runc's list, not a narrower one, because runc writes this list into each
 * container's group under ours and the kernel refuses a child any rule its parent lacks:
 * narrower here, and every Docker container in the space would fail to start. Plus /dev/kvm
 * (10:232), which a space's QEMU needs under KVM: the cgroup only permits it; the file's ACL
 * (libvirt/kvm-access.ts) decides which uid may open it, and containers get runc's list only.
 * And /dev/fuse (10:229), which the space's engine opens where fuse-overlayfs mounts its
 * layers (a store on ZFS); runc's list for each container has no such rule.
 */
export const V1_DEVICE_RULES: readonly string[] = [
  'c *:* m',
  'b *:* m',
  'c 1:3 rwm',
  'c 1:5 rwm',
  'c 1:7 rwm',
  'c 1:8 rwm',
  'c 1:9 rwm',
  'c 5:0 rwm',
  'c 5:1 rwm',
  'c 5:2 rwm',
  'c 136:* rwm',
  'c 10:200 rwm',
  'c 10:232 rwm',
  'c 10:229 rwm',
];

/** Controllers without which the v1 driver cannot keep its promises. */
export const V1_REQUIRED: readonly V1Controller[] = ['memory', 'cpu', 'pids', 'devices'];

/** Options of {@link V1CgroupDriver}. */
export interface V1Options extends CgroupDriverOptions {
  /** Mount point of each controller's hierarchy; co-mounted controllers (cpu,cpuacct) share one. */
  mounts: Partial<Record<V1Controller, string>>;
  /**
   * Other hierarchies under the same root (name=systemd, a hybrid host's cgroup2 "unified").
   * This driver puts nothing there, but runc mirrors every container's path into them, so
   * `destroy` kills and removes the path there too.
   */
  mirrors?: string[];
}

/** cgroup v1: one directory per hierarchy, kept in step by this driver. */
export class V1CgroupDriver implements CgroupDriver {
  readonly version = 'v1' as const;
  private readonly mounts: Partial<Record<V1Controller, string>>;
  /** Distinct hierarchy mount points, cpuset first so a task never meets an empty cpuset. */
  private readonly hierarchies: string[];
  private readonly mirrors: string[];
  private readonly killTimeoutMs: number;

  constructor(opts: V1Options) {
    const missing = V1_REQUIRED.filter((c) => !opts.mounts[c]);
    if (missing.length) throw new Error(`cgroup v1 controllers not mounted: ${missing.join(', ')}`);
    this.mounts = { ...opts.mounts };
    const order: V1Controller[] = ['cpuset', 'memory', 'cpu', 'cpuacct', 'pids', 'blkio', 'devices', 'freezer'];
    this.hierarchies = [...new Set(order.map((c) => this.mounts[c]).filter((d): d is string => !!d))];
    this.mirrors = (opts.mirrors ?? []).filter((m) => !this.hierarchies.includes(m));
    this.killTimeoutMs = opts.killTimeoutMs ?? 10_000;
  }

  private dir(ctrl: V1Controller, segs: string[]): string {
    const mount = this.mounts[ctrl];
    if (!mount) throw new Error(`cgroup v1 controller ${ctrl} is not mounted`);
    return join(mount, ...segs);
  }

  private has(ctrl: V1Controller, hierarchy: string): boolean {
    return this.mounts[ctrl] === hierarchy;
  }

  /** The creates in flight: see {@link create}. */
  private readonly creating = new KeyedLock();

  /**
   * One create at a time. The kernel refuses to turn a devices group with children from
   * allow-all to deny-all (EINVAL), so two reservations that race to make the same parent
   * would otherwise fail one of them: the second makes its child before the first restricts
   * the parent (seen in 100 concurrent reservations).
   */
  create(path: string, limits?: CgroupLimits): Promise<void> {
    return this.creating.run('create', () => this.createNow(path, limits));
  }

  private async createNow(path: string, limits?: CgroupLimits): Promise<void> {
    const segs = parseCgroupPath(path);
    if (limits !== undefined) validateLimits(limits);
    await this.refuseInternalProcesses(path, segs);
    for (const h of this.hierarchies) {
      for (let i = 1; i <= segs.length; i++) {
        const dir = join(h, ...segs.slice(0, i));
        const created = await mkdirOnce(dir);
        if (this.has('cpuset', h)) await copyCpuset(join(h, ...segs.slice(0, i - 1)), dir);
        // A new group inherits its parent's device list, so only new groups and the target need the check.
        if (this.has('devices', h) && (created || i === segs.length)) await restrictDevices(dir);
      }
    }
    if (limits !== undefined) await this.setLimits(path, limits);
  }

  /** Processes live only in leaves: nesting a new group under one with processes is refused. */
  private async refuseInternalProcesses(path: string, segs: string[]): Promise<void> {
    for (let i = 1; i < segs.length; i++) {
      const parent = segs.slice(0, i);
      if (!(await this.levelExistsEverywhere(segs.slice(0, i + 1))) && (await this.pidsAt(parent)).length > 0) {
        throw new Error(
          `cannot create cgroup ${path}: ${parent.join('/')} holds processes, and processes may live only in leaf groups`,
        );
      }
    }
  }

  private async levelExistsEverywhere(segs: string[]): Promise<boolean> {
    for (const h of this.hierarchies) if (!(await isDirectory(join(h, ...segs)))) return false;
    return true;
  }

  async setLimits(path: string, limits: CgroupLimits): Promise<void> {
    const segs = parseCgroupPath(path);
    validateLimits(limits);
    await this.requireGroup(path, segs);
    await setMemory(this.dir('memory', segs), limits.memoryBytes);
    await setCpu(this.dir('cpu', segs), limits.cpuMillicores * (CPU_PERIOD_US / 1000));
    await writeValue(join(this.dir('pids', segs), 'pids.max'), limits.pids === undefined ? 'max' : String(limits.pids));
  }

  async readLimits(path: string): Promise<CgroupLimits> {
    const segs = parseCgroupPath(path);
    await this.requireGroup(path, segs);
    const cpu = this.dir('cpu', segs);
    const quota = Number(await readText(join(cpu, 'cpu.cfs_quota_us')));
    const period = Number(await readText(join(cpu, 'cpu.cfs_period_us')));
    const pids = await readText(join(this.dir('pids', segs), 'pids.max'));
    return {
      cpuMillicores: quota < 0 ? Number.POSITIVE_INFINITY : Math.round((quota * 1000) / period),
      memoryBytes: parseBytes(await readText(join(this.dir('memory', segs), 'memory.limit_in_bytes'))),
      ...(pids === 'max' ? {} : { pids: Number(pids) }),
    };
  }

  async usage(path: string): Promise<CgroupUsage> {
    const segs = parseCgroupPath(path);
    await this.requireGroup(path, segs);
    const mem = this.dir('memory', segs);
    const peak = await readOptional(join(mem, 'memory.max_usage_in_bytes'));
    const cpuNs = this.mounts.cpuacct
      ? await readOptional(join(this.dir('cpuacct', segs), 'cpuacct.usage'))
      : undefined;
    const oom = parseKeyed(await readOptional(join(mem, 'memory.oom_control'))).get('oom_kill');
    return {
      memoryBytes: Number(await readText(join(mem, 'memory.usage_in_bytes'))),
      ...(peak !== undefined ? { memoryPeakBytes: Number(peak) } : {}),
      pids: Number(await readText(join(this.dir('pids', segs), 'pids.current'))),
      ...(cpuNs !== undefined ? { cpuUsageNs: Number(cpuNs) } : {}),
      ...(oom !== undefined ? { oomKills: oom } : {}),
    };
  }

  async addProcess(path: string, pid: number): Promise<void> {
    const segs = parseCgroupPath(path);
    validatePid(pid);
    await this.requireGroup(path, segs);
    if ((await this.children(path)).length > 0) {
      throw new Error(
        `cannot add process ${pid} to cgroup ${path}: it has child groups, and processes may live only in leaf groups`,
      );
    }
    for (const h of this.hierarchies) await writeValue(join(h, ...segs, 'cgroup.procs'), String(pid));
  }

  async processes(path: string): Promise<number[]> {
    return this.pidsAt(parseCgroupPath(path));
  }

  /** Union over hierarchies: a process moved by hand into one controller only is still found. */
  private async pidsAt(segs: string[]): Promise<number[]> {
    const all = new Set<number>();
    for (const h of this.hierarchies) for (const pid of await readPids(join(h, ...segs, 'cgroup.procs'))) all.add(pid);
    return [...all].sort((a, b) => a - b);
  }

  async exists(path: string): Promise<boolean> {
    const segs = parseCgroupPath(path);
    return anyDirectory(this.hierarchies.map((h) => join(h, ...segs)));
  }

  async children(path: string): Promise<string[]> {
    const segs = parseCgroupPath(path);
    const names = new Set<string>();
    for (const h of this.hierarchies) for (const n of await childDirs(join(h, ...segs))) names.add(n);
    return [...names].sort();
  }

  async destroy(path: string): Promise<void> {
    const segs = parseCgroupPath(path);
    const everywhere = [...this.hierarchies, ...this.mirrors];
    if (!(await anyDirectory(everywhere.map((h) => join(h, ...segs))))) return;
    const deadline = Date.now() + this.killTimeoutMs;
    const list = () => this.subtreePids(segs);
    if ((await list()).includes(process.pid))
      throw new Error(`refusing to destroy cgroup ${path}: it holds this process (${process.pid})`);
    const freezer = this.mounts.freezer ? join(this.mounts.freezer, ...segs) : undefined;
    // v1 has no cgroup.kill. Frozen tasks cannot fork or exit, so one pass kills a stable set;
    // the SIGKILLs stay pending until the thaw. Every group is thawed, not only the top: a
    // child frozen on its own (`docker pause`) would otherwise keep its killed tasks forever.
    const freezable = freezer !== undefined && (await isDirectory(freezer));
    try {
      if (freezable) await freeze(freezer, 2_000);
      (await list()).forEach(killPid);
    } finally {
      if (freezable) {
        for (const rel of (await subtreeDeepestFirst(freezer)).reverse()) {
          await writeValue(join(freezer, rel, 'freezer.state'), 'THAWED').catch(() => undefined);
        }
      }
    }
    await killUntilEmpty(path, list, async (pids) => pids.forEach(killPid), Math.max(0, deadline - Date.now()));
    for (const h of everywhere) {
      const top = join(h, ...segs);
      for (const rel of await subtreeDeepestFirst(top)) await rmdirGroup(join(top, rel), deadline + 5_000);
    }
  }

  private async subtreePids(segs: string[]): Promise<number[]> {
    const all = new Set<number>();
    for (const h of [...this.hierarchies, ...this.mirrors]) {
      const top = join(h, ...segs);
      for (const rel of await subtreeDeepestFirst(top))
        for (const pid of await readPids(join(top, rel, 'cgroup.procs'))) all.add(pid);
    }
    return [...all];
  }

  absolutePath(path: string): string {
    return `/${parseCgroupPath(path).join('/')}`;
  }

  private async requireGroup(path: string, segs: string[]): Promise<void> {
    for (const h of this.hierarchies) {
      if (!(await isDirectory(join(h, ...segs)))) throw new Error(`cgroup ${path} does not exist under ${h}`);
    }
  }
}

async function anyDirectory(dirs: string[]): Promise<boolean> {
  for (const d of dirs) if (await isDirectory(d)) return true;
  return false;
}

/** A new cpuset group starts with empty cpus/mems, and no task may join it until both are set. */
async function copyCpuset(parent: string, dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    if ((await readText(join(dir, file))) !== '') continue;
    const value =
      (await readText(join(parent, file))) ||
      (await readText(join(parent, file.replace('cpuset.', 'cpuset.effective_'))));
    await writeValue(join(dir, file), value);
  }
}

/** Deny all, then allow {@link V1_DEVICE_RULES}; skipped when the list already matches. */
async function restrictDevices(dir: string): Promise<void> {
  const current = new Set((await readText(join(dir, 'devices.list'))).split('\n').filter(Boolean));
  if (current.size === V1_DEVICE_RULES.length && V1_DEVICE_RULES.every((r) => current.has(r))) return;
  await writeValue(join(dir, 'devices.deny'), 'a');
  for (const rule of V1_DEVICE_RULES) await writeValue(join(dir, 'devices.allow'), rule);
}

/**
 * memsw (memory+swap) must never fall below the memory limit, so the order of the two writes
 * depends on the direction; equal values mean no swap beyond the memory limit.
 */
async function setMemory(dir: string, bytes: number): Promise<void> {
  const limit = join(dir, 'memory.limit_in_bytes');
  const memsw = join(dir, 'memory.memsw.limit_in_bytes');
  const hasMemsw = (await readOptional(memsw)) !== undefined;
  const raising = bytes >= parseBytes(await readText(limit));
  const files = hasMemsw ? (raising ? [memsw, limit] : [limit, memsw]) : [limit];
  for (const f of files) await writeValue(f, String(bytes));
  // Deprecated on recent kernels and refused on some; swap is already capped by memsw above.
  await writeValue(join(dir, 'memory.swappiness'), '0').catch(() => undefined);
}

/** A period change is checked against the parent's ratio with the old quota, so try both orders. */
async function setCpu(dir: string, quotaUs: number): Promise<void> {
  const period = join(dir, 'cpu.cfs_period_us');
  const quota = join(dir, 'cpu.cfs_quota_us');
  if (Number(await readText(period)) === CPU_PERIOD_US) return writeValue(quota, String(quotaUs));
  try {
    await writeValue(period, String(CPU_PERIOD_US));
    await writeValue(quota, String(quotaUs));
  } catch {
    await writeValue(quota, String(quotaUs));
    await writeValue(period, String(CPU_PERIOD_US));
  }
}

/**
 * Waits for FROZEN, but only up to `timeoutMs`: a task in uninterruptible sleep keeps the group
 * FREEZING, and killing the rest is still better than waiting forever.
 */
async function freeze(dir: string, timeoutMs: number): Promise<void> {
  const state = join(dir, 'freezer.state');
  await writeValue(state, 'FROZEN');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await readText(state)) !== 'FROZEN') await sleep(10);
}
