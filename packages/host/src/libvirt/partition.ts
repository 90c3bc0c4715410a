/**
 * The VM's cgroup placement (`<resource><partition>`), and what libvirt demands of it.
 *
 * Found by reading libvirt 9.0 (virCgroupSetPartitionSuffix) and confirmed on this host:
 * - every component of a partition path that has no `.` gets `.partition` appended (only a
 *   top-level `machine`, `system` or `user` is kept), so `/ocs/sp_1/vms` really means
 *   `/ocs.partition/sp_1.partition/vms.partition`: a dotless path lands beside the space's
 *   cgroup, not in it. A component that starts with `_`, `.`, `cgroup.` or `<controller>.` gets
 *   a `_` prefix. We therefore accept only paths that libvirt keeps verbatim.
 * - libvirt creates only its default `/machine`; any other partition must already exist, in
 *   every hierarchy it uses: on this cgroup v1 host with a hybrid cgroup2 at
 *   /sys/fs/cgroup/unified that includes the unified one ("Unable to read from
 *   '/sys/fs/cgroup/unified/…/cgroup.controllers'" otherwise). {@link ensurePartition} creates
 *   what is missing; the space's cgroup teardown removes it (the v1 cgroup driver's `destroy`
 *   also walks the unified mirror).
 * - QEMU then lives in `<partition>/qemu-<n>-<domain>.libvirt-qemu` for cpu, cpuset, memory,
 *   blkio, freezer and the unified hierarchy (vCPU threads in `…/vcpu<n>`, the rest in
 *   `…/emulator` for cpu/cpuset); libvirt does not place it in pids, devices or cpuacct.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { parseCgroupMounts } from '../cgroups/index.js';

/** Kernel cgroup controller names: libvirt escapes a component that starts with `<name>.`. */
const CONTROLLERS = [
  'cpu',
  'cpuacct',
  'cpuset',
  'memory',
  'devices',
  'freezer',
  'net_cls',
  'blkio',
  'perf_event',
  'net_prio',
  'hugetlb',
  'pids',
  'rdma',
  'misc',
];

/** v1 controllers libvirt's QEMU driver may place a domain in. */
const LIBVIRT_V1 = new Set([
  'cpu',
  'cpuacct',
  'cpuset',
  'memory',
  'devices',
  'freezer',
  'blkio',
  'net_cls',
  'perf_event',
]);

/** Letters, digits, `_` and `-`, with at least one `.`-separated suffix; not starting with `_`. */
const COMPONENT = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$/;
const MAX_DEPTH = 16;

/** Why libvirt would not use `path` verbatim as a partition, or undefined when it would. */
export function partitionProblem(path: unknown): string | undefined {
  if (typeof path !== 'string' || !path.startsWith('/') || path.length > 512) return 'must be an absolute path';
  if (posix.normalize(path) !== path || path.endsWith('/')) return 'must be normalized';
  const parts = path.slice(1).split('/');
  if (parts.length > MAX_DEPTH) return `may have at most ${MAX_DEPTH} components`;
  for (const p of parts) {
    if (!COMPONENT.test(p)) {
      return 'every component must be [A-Za-z0-9_-] with a "." suffix (e.g. vms.partition), else libvirt renames it';
    }
    if (p.startsWith('cgroup.') || CONTROLLERS.some((c) => p.startsWith(`${c}.`))) {
      return `component "${p}" would be escaped by libvirt (it starts like a cgroup file name)`;
    }
  }
  return undefined;
}

/** Throws `invalid_request` unless libvirt will use `path` as the partition verbatim. */
export function checkPartition(path: unknown): asserts path is string {
  const problem = partitionProblem(path);
  if (problem) throw new OcsError('invalid_request', `cgroupPartition ${problem}`, { field: 'cgroupPartition' });
}

/** Mount points of the cgroup hierarchies libvirt will look for a partition in. */
export async function libvirtHierarchies(mountinfo = '/proc/self/mountinfo'): Promise<string[]> {
  const mounts = parseCgroupMounts(await readFile(mountinfo, 'utf8'));
  const out = new Set<string>();
  for (const m of mounts) {
    if (m.type === 'cgroup2' || m.options.some((o) => LIBVIRT_V1.has(o))) out.add(m.mountPoint);
  }
  return [...out];
}

/**
 * Creates the directories of `partition` that are missing in any hierarchy libvirt uses (no
 * limits are written: those belong to the cgroup driver). A new v1 cpuset group gets its
 * parent's cpus and mems, without which no task may join it. Returns the directories made.
 */
export async function ensurePartition(partition: string, hierarchies?: string[]): Promise<string[]> {
  checkPartition(partition);
  const made: string[] = [];
  const segs = partition.slice(1).split('/');
  for (const h of hierarchies ?? (await libvirtHierarchies())) {
    for (let i = 1; i <= segs.length; i++) {
      const dir = join(h, ...segs.slice(0, i));
      if ((await mkdir(dir).then(() => true, mkdirExisted)) === false) continue;
      made.push(dir);
      await chmod(dir, 0o755);
      await copyCpuset(dirname(dir), dir);
    }
  }
  return made;
}

function mkdirExisted(err: NodeJS.ErrnoException): false {
  if (err.code === 'EEXIST') return false;
  throw err;
}

async function copyCpuset(parent: string, dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const mine = await readFile(join(dir, file), 'utf8').catch(() => undefined);
    if (mine === undefined || mine.trim() !== '') continue; // not a cpuset hierarchy, or already set
    const value = (await readFile(join(parent, file), 'utf8')).trim();
    await writeFile(join(dir, file), value);
  }
}
