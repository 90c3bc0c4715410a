import { join } from 'node:path';
import type { CgroupDriver, CgroupDriverOptions, CgroupLimits, CgroupUsage } from './types.js';
import { CPU_PERIOD_US, parseCgroupPath, validateLimits, validatePid } from './validate.js';
import {
  childDirs,
  errno,
  fileExists,
  isDirectory,
  killPid,
  killUntilEmpty,
  mkdirOnce,
  parseKeyed,
  readOptional,
  readPids,
  readText,
  rmdirGroup,
  subtreeDeepestFirst,
  writeValue,
} from './fsutil.js';

/** Controllers the v2 driver needs for limits and enables down the tree. */
export const V2_REQUIRED = ['cpu', 'memory', 'pids'] as const;

/** Options of {@link V2CgroupDriver}. */
export interface V2Options extends CgroupDriverOptions {
  /**
   * The group every path is below: where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or
   * /sys/fs/cgroup/unified on a hybrid host), or a group delegated to us inside it.
   */
  root: string;
  /**
   * Where `root` is in the hierarchy, as /proc/PID/cgroup names it (`/system.slice/ocs-node.service`
   * for the group systemd delegated to the unit); default `/`, the hierarchy's root. Engines are
   * told absolute paths ({@link V2CgroupDriver.absolutePath}).
   */
  hierarchyPath?: string;
}

/** cgroup v2: one unified tree; controllers are handed down through cgroup.subtree_control. */
export class V2CgroupDriver implements CgroupDriver {
  readonly version = 'v2' as const;
  readonly root: string;
  readonly hierarchyPath: string;
  private readonly killTimeoutMs: number;

  constructor(opts: V2Options) {
    this.root = opts.root;
    this.hierarchyPath = opts.hierarchyPath === undefined ? '/' : opts.hierarchyPath;
    if (!this.hierarchyPath.startsWith('/') || this.hierarchyPath.split('/').some((s) => s === '..'))
      throw new Error(`hierarchyPath must be an absolute cgroup path, not ${opts.hierarchyPath}`);
    this.killTimeoutMs = opts.killTimeoutMs ?? 10_000;
  }

  /** Whether `root` is a group delegated to us rather than the hierarchy's root. */
  get delegated(): boolean {
    return this.hierarchyPath !== '/';
  }

  /**
   * Moves this process into the leaf `name` of a delegated root, with its own limits: cgroup v2
   * lets a group with processes hand no controllers down, and a service manager starts us in the
   * top of our delegated group. Only this process moves (its threads with it): anything else
   * left in the group is not ours to move, and `create` then fails naming it. At the
   * hierarchy's root nothing moves (the root is exempt, and its processes are the host's).
   */
  async enterLeaf(name: string, limits: Pick<CgroupLimits, 'memoryBytes' | 'pids'>): Promise<string | undefined> {
    if (!this.delegated) return undefined;
    const segs = parseCgroupPath(name);
    if (segs.length !== 1) throw new Error(`the daemon's own group is one name below the root, not ${name}`);
    const dir = this.dir(segs);
    // Out first: the controllers can be handed down only once the root holds no process.
    await mkdirOnce(dir);
    await writeValue(join(dir, 'cgroup.procs'), String(process.pid));
    await this.create(name);
    await writeMemoryAndPids(dir, limits);
    return dir;
  }

  private dir(segs: string[]): string {
    return join(this.root, ...segs);
  }

  /** Controllers the kernel offers to this group (what its parent enabled for it). */
  async controllers(path: string): Promise<string[]> {
    const text = await readOptional(join(this.dir(parseCgroupPath(path)), 'cgroup.controllers'));
    return text ? text.split(/\s+/) : [];
  }

  async create(path: string, limits?: CgroupLimits): Promise<void> {
    const segs = parseCgroupPath(path);
    if (limits !== undefined) validateLimits(limits);
    for (let i = 1; i <= segs.length; i++) {
      const dir = this.dir(segs.slice(0, i));
      if (await isDirectory(dir)) continue;
      const parent = segs.slice(0, i - 1);
      // The kernel only enforces this once a controller is enabled; refusing early keeps the
      // layout valid whatever the host enables, and the message says why.
      if (parent.length > 0 && (await readPids(join(this.dir(parent), 'cgroup.procs'))).length > 0) {
        throw new Error(
          `cannot create cgroup ${path}: ${parent.join('/')} holds processes, and processes may live only in leaf groups`,
        );
      }
      await mkdirOnce(dir);
    }
    await this.enableControllers(path, segs);
    if (limits !== undefined) await this.setLimits(path, limits);
  }

  /**
   * Writes "+cpu +memory +pids" (those the kernel offers and not yet enabled) into the
   * subtree_control of the root and of every ancestor of the group, top down. The root is
   * exempt from the no-internal-processes rule; any other ancestor with processes makes the
   * kernel answer EBUSY, reported as such.
   */
  private async enableControllers(path: string, segs: string[]): Promise<void> {
    for (let i = 0; i < segs.length; i++) {
      const dir = this.dir(segs.slice(0, i));
      const offered = new Set((await readText(join(dir, 'cgroup.controllers'))).split(/\s+/));
      const enabled = new Set((await readText(join(dir, 'cgroup.subtree_control'))).split(/\s+/));
      const add = V2_REQUIRED.filter((c) => offered.has(c) && !enabled.has(c));
      if (add.length === 0) continue;
      try {
        await writeValue(join(dir, 'cgroup.subtree_control'), add.map((c) => `+${c}`).join(' '));
      } catch (err) {
        if (errno(err) !== 'EBUSY') throw err;
        throw new Error(
          `cannot enable ${add.join(', ')} for cgroup ${path}: ${dir} holds processes (cgroup v2 allows processes only in leaf groups)`,
          { cause: err },
        );
      }
    }
  }

  /** Fails with the missing controllers named, rather than an opaque ENOENT on a limit file. */
  private async requireControllers(path: string, segs: string[], wanted: readonly string[]): Promise<void> {
    await this.requireGroup(path, segs);
    const offered = await this.controllers(path);
    const missing = wanted.filter((c) => !offered.includes(c));
    if (missing.length > 0) {
      const rootOffers = (await readOptional(join(this.root, 'cgroup.controllers'))) || 'none';
      throw new Error(
        `cgroup v2 controllers ${missing.join(', ')} are not available to ${path} (the kernel offers at ${this.root}: ${rootOffers})`,
      );
    }
  }

  async setLimits(path: string, limits: CgroupLimits): Promise<void> {
    const segs = parseCgroupPath(path);
    validateLimits(limits);
    await this.requireControllers(path, segs, V2_REQUIRED);
    const dir = this.dir(segs);
    await writeValue(join(dir, 'cpu.max'), `${limits.cpuMillicores * (CPU_PERIOD_US / 1000)} ${CPU_PERIOD_US}`);
    await writeMemoryAndPids(dir, limits);
  }

  async readLimits(path: string): Promise<CgroupLimits> {
    const segs = parseCgroupPath(path);
    await this.requireControllers(path, segs, V2_REQUIRED);
    const dir = this.dir(segs);
    const [quota = 'max', period = String(CPU_PERIOD_US)] = (await readText(join(dir, 'cpu.max'))).split(/\s+/);
    const memory = await readText(join(dir, 'memory.max'));
    const pids = await readText(join(dir, 'pids.max'));
    return {
      cpuMillicores: quota === 'max' ? Number.POSITIVE_INFINITY : Math.round((Number(quota) * 1000) / Number(period)),
      memoryBytes: memory === 'max' ? Number.POSITIVE_INFINITY : Number(memory),
      ...(pids === 'max' ? {} : { pids: Number(pids) }),
    };
  }

  async usage(path: string): Promise<CgroupUsage> {
    const segs = parseCgroupPath(path);
    await this.requireControllers(path, segs, ['memory', 'pids']);
    const dir = this.dir(segs);
    const peak = await readOptional(join(dir, 'memory.peak'));
    const cpuUsec = parseKeyed(await readOptional(join(dir, 'cpu.stat'))).get('usage_usec');
    const oom = parseKeyed(await readOptional(join(dir, 'memory.events'))).get('oom_kill');
    return {
      memoryBytes: Number(await readText(join(dir, 'memory.current'))),
      ...(peak !== undefined ? { memoryPeakBytes: Number(peak) } : {}),
      pids: Number(await readText(join(dir, 'pids.current'))),
      ...(cpuUsec !== undefined ? { cpuUsageNs: cpuUsec * 1000 } : {}),
      ...(oom !== undefined ? { oomKills: oom } : {}),
    };
  }

  async addProcess(path: string, pid: number): Promise<void> {
    const segs = parseCgroupPath(path);
    validatePid(pid);
    await this.requireGroup(path, segs);
    if ((await childDirs(this.dir(segs))).length > 0) {
      throw new Error(
        `cannot add process ${pid} to cgroup ${path}: it has child groups, and processes may live only in leaf groups`,
      );
    }
    await writeValue(join(this.dir(segs), 'cgroup.procs'), String(pid));
  }

  async processes(path: string): Promise<number[]> {
    return (await readPids(join(this.dir(parseCgroupPath(path)), 'cgroup.procs'))).sort((a, b) => a - b);
  }

  async exists(path: string): Promise<boolean> {
    return isDirectory(this.dir(parseCgroupPath(path)));
  }

  async children(path: string): Promise<string[]> {
    return childDirs(this.dir(parseCgroupPath(path)));
  }

  async destroy(path: string): Promise<void> {
    const segs = parseCgroupPath(path);
    const top = this.dir(segs);
    if (!(await isDirectory(top))) return;
    const deadline = Date.now() + this.killTimeoutMs;
    const list = async () => {
      const all: number[] = [];
      for (const rel of await subtreeDeepestFirst(top)) all.push(...(await readPids(join(top, rel, 'cgroup.procs'))));
      return all;
    };
    if ((await list()).includes(process.pid))
      throw new Error(`refusing to destroy cgroup ${path}: it holds this process (${process.pid})`);
    // cgroup.kill (5.14+) kills the whole subtree and fails forks racing with it; older kernels
    // get freeze, SIGKILL each pid, thaw (a v2-frozen task still dies of SIGKILL).
    const hasKill = await fileExists(join(top, 'cgroup.kill'));
    const kill = async (pids: number[]) => {
      if (hasKill) return writeValue(join(top, 'cgroup.kill'), '1');
      await writeValue(join(top, 'cgroup.freeze'), '1');
      try {
        pids.forEach(killPid);
      } finally {
        await writeValue(join(top, 'cgroup.freeze'), '0');
      }
    };
    await killUntilEmpty(path, list, kill, this.killTimeoutMs);
    for (const rel of await subtreeDeepestFirst(top)) await rmdirGroup(join(top, rel), deadline + 5_000);
  }

  absolutePath(path: string): string {
    return `/${[...this.hierarchyPath.split('/').filter(Boolean), ...parseCgroupPath(path)].join('/')}`;
  }

  private async requireGroup(path: string, segs: string[]): Promise<void> {
    if (!(await isDirectory(this.dir(segs)))) throw new Error(`cgroup ${path} does not exist under ${this.root}`);
  }
}

/** memory.max with no swap beyond it, and pids.max, of the group at `dir`. */
async function writeMemoryAndPids(dir: string, limits: Pick<CgroupLimits, 'memoryBytes' | 'pids'>): Promise<void> {
  await writeValue(join(dir, 'memory.max'), String(limits.memoryBytes));
  // Present only with swap accounting; without the file there is no swap to cap.
  if ((await readOptional(join(dir, 'memory.swap.max'))) !== undefined)
    await writeValue(join(dir, 'memory.swap.max'), '0');
  await writeValue(join(dir, 'pids.max'), limits.pids === undefined ? 'max' : String(limits.pids));
}
