import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { CgroupDriver, CgroupDriverOptions, V1Controller } from './types.js';
import { V1CgroupDriver, V1_REQUIRED } from './v1.js';
import { V2CgroupDriver, V2_REQUIRED } from './v2.js';
import { readOptional } from './fsutil.js';

/** Options of {@link detectCgroups}. */
export interface DetectOptions extends CgroupDriverOptions {
  /** Where the cgroup file systems are mounted. Default /sys/fs/cgroup. */
  root?: string;
  /** The mount table to read. Default /proc/self/mountinfo. */
  mountinfo?: string;
  /** This process's cgroups (proc(5)). Default /proc/self/cgroup. */
  selfCgroup?: string;
}

/** One cgroup file system mount, from /proc/self/mountinfo. */
export interface CgroupMount {
  mountPoint: string;
  type: 'cgroup' | 'cgroup2';
  /** v1 controllers (and `name=` hierarchies) of this mount; empty for cgroup2. */
  options: string[];
}

const V1_CONTROLLERS: readonly V1Controller[] = [
  'memory',
  'cpu',
  'cpuacct',
  'cpuset',
  'pids',
  'blkio',
  'devices',
  'freezer',
];

/** Mount points are octal-escaped in mountinfo (a space is "\040"). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The cgroup and cgroup2 mounts listed in a mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    const type = fields[sep + 1];
    const mountPoint = fields[4];
    if (sep < 0 || mountPoint === undefined || (type !== 'cgroup' && type !== 'cgroup2')) continue;
    out.push({
      mountPoint: unescapeMount(mountPoint),
      type,
      options: type === 'cgroup' ? (fields[sep + 3] ?? '').split(',') : [],
    });
  }
  return out;
}

/**
 * This process's group in the unified hierarchy, from a /proc/PID/cgroup text (the `0::` line):
 * `/` at the root, `/system.slice/ocs-node.service` in a systemd service. Undefined on a v1-only host.
 */
export function unifiedGroupOf(procCgroup: string): string | undefined {
  const line = procCgroup.split('\n').find((l) => l.startsWith('0::'));
  const path = line?.slice(3);
  // "(deleted)" or a path outside our cgroup namespace ("/../..") cannot be a root to write under.
  if (path === undefined || !path.startsWith('/') || path.split('/').includes('..') || path.endsWith(' (deleted)'))
    return undefined;
  return path;
}

/**
 * Picks the driver for this host: v2 when `root` itself is a cgroup2 mount whose root offers
 * cpu, memory and pids; the driver's root is then the group this process was started in when
 * that is not the hierarchy's root: a service manager's delegated group (systemd's
 * `Delegate=yes`, packaging/systemd/ocs-node.service), so that nothing is written above it.
 * Otherwise v1 when memory, cpu, pids and devices hierarchies are
 * mounted below `root` (a hybrid host's cgroup2 at root/unified is then ignored); otherwise
 * an Error that says what was found.
 */
export async function detectCgroups(opts: DetectOptions = {}): Promise<CgroupDriver> {
  const root = resolve(opts.root ?? '/sys/fs/cgroup');
  const mounts = parseCgroupMounts(await readFile(opts.mountinfo ?? '/proc/self/mountinfo', 'utf8'));
  const common = opts.killTimeoutMs === undefined ? {} : { killTimeoutMs: opts.killTimeoutMs };

  let v2Offers: string[] | undefined;
  let v2Root = root;
  if (mounts.some((m) => m.type === 'cgroup2' && m.mountPoint === root)) {
    const own = unifiedGroupOf((await readOptional(opts.selfCgroup ?? '/proc/self/cgroup')) ?? '') ?? '/';
    v2Root = own === '/' ? root : join(root, own);
    v2Offers = ((await readOptional(`${v2Root}/cgroup.controllers`)) ?? '').split(/\s+/).filter(Boolean);
    if (V2_REQUIRED.every((c) => v2Offers?.includes(c)))
      return new V2CgroupDriver({ root: v2Root, hierarchyPath: own, ...common });
  }

  const v1: Partial<Record<V1Controller, string>> = {};
  const mirrors: string[] = [];
  for (const m of mounts) {
    if (!m.mountPoint.startsWith(`${root}/`)) continue;
    const controllers = V1_CONTROLLERS.filter((c) => m.options.includes(c));
    for (const c of controllers) v1[c] ??= m.mountPoint;
    if (controllers.length === 0) mirrors.push(m.mountPoint);
  }
  if (V1_REQUIRED.every((c) => v1[c])) return new V1CgroupDriver({ mounts: v1, mirrors, ...common });

  const found = [
    v2Offers
      ? `cgroup2 at ${v2Root} offers [${v2Offers.join(' ')}] (needs ${V2_REQUIRED.join(', ')}${v2Root === root ? '' : '; a service needs Delegate=yes'})`
      : `no cgroup2 mount at ${root}`,
    `cgroup v1 controllers mounted: [${Object.keys(v1).join(' ')}] (needs ${V1_REQUIRED.join(', ')})`,
  ];
  throw new Error(`no usable cgroups under ${root}: ${found.join('; ')}`);
}
