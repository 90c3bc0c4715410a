/**
 * The hardening every container gets, whatever the broker passed (defence in depth): the spec is
 * re-validated here and the engine's create body is built from it by one pure function, so a
 * test can read exactly what podman will be told.
 */
import { isIPv4 } from 'node:net';
import { readFileSync } from 'node:fs';
import { lstat, realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { ALLOWED_CAPABILITIES, OcsError } from '@ocs/protocol';
import {
  LABEL_CONTAINER,
  LABEL_IMAGE,
  LABEL_NAME,
  LABEL_SPACE,
  checkContainerId,
  checkName,
  checkSpaceId,
  containerName,
} from './names.js';
import type { ContainerMount, ContainerSpec } from './types.js';

/**
 * Bounds on a container's limits; outside them the spec is refused, not clamped. 0 would mean
 * "unlimited" to the engine.
 */
export const CONTAINER_BOUNDS = {
  /** The kernel's CFS quota floor is 1 ms per 100 ms period. */
  cpuMillicores: { min: 10, max: 1_024_000 },
  /** podman (like dockerd) refuses less than 6 MiB. */
  memoryBytes: { min: 6 * 1024 * 1024, max: 2 ** 50 },
  pids: { min: 1, max: 4_194_304 },
} as const;

/**
 * Host trees never bind-mounted into a container, even if the broker let one through: the
 * system, the kernel's interfaces, and the container engine's own state (its socket would be
 * root on the host).
 */
export const FORBIDDEN_SOURCE_TREES = [
  '/proc',
  '/sys',
  '/dev',
  '/boot',
  '/etc',
  '/run',
  '/var/run',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/var/lib/containers',
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib64',
] as const;

const CGROUP_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const TARGET = /^\/[A-Za-z0-9_./-]{0,255}$/;

function invalid(message: string, field: string): OcsError {
  return new OcsError('invalid_request', message, { field });
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function under(path: string, tree: string): boolean {
  return path === tree || path.startsWith(`${tree}/`);
}

function checkInt(field: keyof typeof CONTAINER_BOUNDS, value: unknown): void {
  const { min, max } = CONTAINER_BOUNDS[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(`${field} must be an integer from ${min} to ${max}`, field);
  }
}

/**
 * Capabilities to add back, as `CAP_…`, deduplicated. Only names in the protocol's
 * `ALLOWED_CAPABILITIES` pass (with or without the `CAP_` prefix); anything else, `ALL`
 * included, is refused rather than dropped, so the caller learns that it asked for too much.
 */
export function normalizeCapabilities(capAdd: unknown): string[] {
  if (!Array.isArray(capAdd) || capAdd.length > 32) throw invalid('capAdd must be a short list', 'capAdd');
  const allowed = new Set<string>(ALLOWED_CAPABILITIES);
  const out = new Set<string>();
  for (const cap of capAdd) {
    const bare = typeof cap === 'string' ? cap.replace(/^CAP_/, '') : '';
    if (!allowed.has(bare)) {
      throw new OcsError('invalid_request', `capability ${String(cap)} may not be added`, {
        field: 'capAdd',
        allowed: [...ALLOWED_CAPABILITIES],
      });
    }
    out.add(`CAP_${bare}`);
  }
  return [...out];
}

/**
 * A cgroupfs parent path: absolute, plain segments, and one segment must be the space id, so a
 * container can never be placed in another space's (or no space's) group.
 */
export function checkCgroupParent(cgroupParent: unknown, spaceId: string): asserts cgroupParent is string {
  const bad = () => invalid('cgroupParent must be an absolute cgroupfs path containing the space id', 'cgroupParent');
  if (typeof cgroupParent !== 'string' || cgroupParent.length > 512 || !cgroupParent.startsWith('/')) throw bad();
  const segments = cgroupParent.slice(1).split('/');
  if (segments.length > 16 || !segments.every((s) => CGROUP_SEGMENT.test(s))) throw bad();
  // `sp_x` itself, or `sp_x.<suffix>` (the daemon suffixes its groups for libvirt's sake).
  if (!segments.some((s) => s === spaceId || s.startsWith(`${spaceId}.`))) throw bad();
}

/** Syntax of one mount; the file-system checks are in {@link checkMountSource}. */
function checkMountShape(m: ContainerMount, i: number): void {
  const field = `mounts[${i}]`;
  if (typeof m !== 'object' || m === null) throw invalid('a mount must be an object', field);
  const { source, target, readOnly } = m;
  if (typeof readOnly !== 'boolean') throw invalid('readOnly must be a boolean', `${field}.readOnly`);
  if (
    typeof source !== 'string' ||
    source.length > 4096 ||
    !posix.isAbsolute(source) ||
    posix.normalize(source) !== source ||
    source.endsWith('/') ||
    hasControlChar(source)
  ) {
    throw invalid('a mount source must be an absolute, normalized path', `${field}.source`);
  }
  if (source === '/' || FORBIDDEN_SOURCE_TREES.some((t) => under(source, t))) {
    throw invalid('a mount source may not be a system path', `${field}.source`);
  }
  if (
    typeof target !== 'string' ||
    !TARGET.test(target) ||
    posix.normalize(target) !== target ||
    target.endsWith('/') ||
    target === '/' ||
    target === '/dev' ||
    under(target, '/proc') ||
    under(target, '/sys')
  ) {
    throw invalid('a mount target must be an absolute, normalized path, not /, /dev, /proc or /sys', `${field}.target`);
  }
}

/**
 * Checks everything about a spec that needs no I/O. Throws `invalid_request` naming the field.
 * Returns the normalized capability list.
 */
export function validateSpec(spec: ContainerSpec): { capAdd: string[] } {
  if (typeof spec !== 'object' || spec === null) throw invalid('spec must be an object', 'spec');
  checkSpaceId(spec.spaceId);
  checkContainerId(spec.containerId);
  checkName(spec.name, 'name');
  checkName(spec.image, 'image');
  checkInt('cpuMillicores', spec.cpuMillicores);
  checkInt('memoryBytes', spec.memoryBytes);
  checkInt('pids', spec.pids);
  checkCgroupParent(spec.cgroupParent, spec.spaceId);
  if (spec.address !== undefined && !isIPv4(spec.address)) throw invalid('address must be an IPv4 address', 'address');
  if (spec.dns !== undefined && !(Array.isArray(spec.dns) && spec.dns.length <= 8 && spec.dns.every((a) => isIPv4(a))))
    throw invalid('dns must be up to 8 IPv4 addresses', 'dns');
  if (spec.command !== undefined) {
    if (
      !Array.isArray(spec.command) ||
      spec.command.length > 256 ||
      !spec.command.every((a) => typeof a === 'string' && a.length <= 4096 && !a.includes('\0'))
    ) {
      throw invalid('command must be up to 256 strings without NUL', 'command');
    }
  }
  if (spec.env !== undefined) {
    if (typeof spec.env !== 'object' || spec.env === null || Array.isArray(spec.env))
      throw invalid('env must be an object', 'env');
    const entries = Object.entries(spec.env);
    if (entries.length > 256) throw invalid('env has too many entries', 'env');
    for (const [k, v] of entries) {
      if (!ENV_NAME.test(k) || typeof v !== 'string' || v.length > 32768 || v.includes('\0')) {
        throw invalid(`env ${JSON.stringify(k.slice(0, 64))} is not a valid name=value`, 'env');
      }
    }
  }
  if (!Array.isArray(spec.mounts) || spec.mounts.length > 32)
    throw invalid('mounts must be a list of up to 32', 'mounts');
  spec.mounts.forEach(checkMountShape);
  const targets = new Set(spec.mounts.map((m) => m.target));
  if (targets.size !== spec.mounts.length) throw invalid('two mounts have the same target', 'mounts');
  if (spec.readOnlyRootfs !== undefined && typeof spec.readOnlyRootfs !== 'boolean') {
    throw invalid('readOnlyRootfs must be a boolean', 'readOnlyRootfs');
  }
  return { capAdd: normalizeCapabilities(spec.capAdd) };
}

/**
 * A bind source must be exactly what it claims: `realpath` equal to the path (no symlink in any
 * component, so a link to `/etc` inside a volume is refused), and a directory or regular file
 * (never a socket such as docker.sock, never a device). Called at create and again at every
 * start, because runc resolves the path again each time the container starts.
 */
export async function checkMountSource(source: string, field = 'mounts.source'): Promise<void> {
  let real: string;
  try {
    real = await realpath(source);
  } catch {
    throw invalid('a mount source does not exist', field);
  }
  if (real !== source) throw invalid('a mount source may not be or pass through a symlink', field);
  const st = await lstat(source).catch(() => undefined);
  if (!st || !(st.isDirectory() || st.isFile()))
    throw invalid('a mount source must be a directory or a regular file', field);
}

/**
 * The parent group must already exist (the broker created it with the space's limits). If it
 * did not, runc would create it without limits and the container would escape the space's
 * budget. Checked in the memory hierarchy on cgroup v1, in the unified tree on v2.
 */
export async function checkCgroupParentExists(cgroupRoot: string, cgroupParent: string): Promise<void> {
  const isDir = async (p: string) => (await stat(p).catch(() => undefined))?.isDirectory() === true;
  const v1 = posix.join(cgroupRoot, 'memory');
  let dir: string;
  if (await isDir(v1)) dir = posix.join(v1, cgroupParent);
  else if ((await stat(posix.join(cgroupRoot, 'cgroup.controllers')).catch(() => undefined)) !== undefined)
    dir = posix.join(cgroupRoot, cgroupParent);
  else throw new OcsError('unavailable', 'no memory cgroup controller found on this host');
  if (!(await isDir(dir))) {
    throw new OcsError('invalid_request', 'the cgroup parent does not exist; the space must be created first', {
      field: 'cgroupParent',
    });
  }
}

/**
 * Paths the image declares as `VOLUME` that no mount of the spec covers. The engine would create
 * an anonymous volume for each, outside the space's own volumes (the libpod body also tells it to
 * make none), so such a container is refused and the owner is told where to mount a volume.
 */
export function uncoveredImageVolumes(
  imageVolumes: Record<string, unknown> | null | undefined,
  mounts: ContainerMount[],
): string[] {
  const targets = new Set(mounts.map((m) => m.target));
  return Object.keys(imageVolumes ?? {})
    .map((v) => (v.length > 1 ? v.replace(/\/+$/, '') : v))
    .filter((v) => !targets.has(v));
}

/** Max processes per host uid for a space's containers: ours, at most 16384 (podman lowers its own to 32768). */
const NPROC_LIMIT = Math.min(16_384, ownHardLimit('Max processes') ?? 4096);

function ownHardLimit(name: string): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(name));
    const hard = line?.slice(name.length).trim().split(/\s+/)[1];
    return hard === undefined || hard === 'unlimited' ? undefined : Number(hard);
  } catch {
    return undefined;
  }
}

/** The space's subordinate ids as the engine maps them (container id 0 = host id `base`). */
export interface IdMap {
  base: number;
  size: number;
}

/**
 * The libpod create body (podman's own API: the Docker-compatible one cannot set an id map) for a
 * validated spec. `imageId` is the resolved `sha256:` id (not the name), so what was checked is
 * what runs. Every capability dropped but the allowed ones asked for, no new privileges, private
 * namespaces, the space's network only, nothing published, no devices, the limits without swap,
 * and a user namespace mapped to the space's own subordinate ids, so the container's root is an
 * unprivileged host uid no other space has. Pure: same input, same output.
 */
export function buildLibpodSpec(
  spec: ContainerSpec,
  capAdd: string[],
  imageId: string,
  network: string,
  idMap: IdMap,
): Record<string, unknown> {
  const map = [{ container_id: 0, host_id: idMap.base, size: idMap.size }];
  return {
    name: containerName(spec.spaceId, spec.containerId),
    image: imageId,
    ...(spec.command !== undefined ? { command: spec.command } : {}),
    env: { ...(spec.env ?? {}) },
    labels: {
      [LABEL_SPACE]: spec.spaceId,
      [LABEL_CONTAINER]: spec.containerId,
      [LABEL_NAME]: spec.name,
      [LABEL_IMAGE]: spec.image,
    },
    terminal: false,
    stdin: false,
    cgroup_parent: spec.cgroupParent,
    cgroups_mode: 'enabled',
    resource_limits: {
      // Equal to the limit: no swap, so nothing pages to the host's disk.
      memory: { limit: spec.memoryBytes, swap: spec.memoryBytes },
      cpu: { quota: spec.cpuMillicores * 100, period: 100_000 },
      pids: { limit: spec.pids },
    },
    // Explicit: runc may not raise a limit above the engine's own hard limit, and podman's
    // defaults are above ours. nproc counts per host uid, so it bounds the whole space (its
    // pids cgroup is the real bound).
    r_limits: [
      { type: 'nofile', hard: 1024, soft: 1024 },
      { type: 'nproc', hard: NPROC_LIMIT, soft: NPROC_LIMIT },
    ],
    cap_drop: ['ALL'],
    cap_add: capAdd,
    no_new_privileges: true,
    privileged: false,
    userns: { nsmode: 'private' },
    idmappings: { UIDMap: map, GIDMap: map },
    pidns: { nsmode: 'private' },
    ipcns: { nsmode: 'private' },
    utsns: { nsmode: 'private' },
    cgroupns: { nsmode: 'private' },
    netns: { nsmode: 'bridge' },
    Networks: { [network]: { aliases: [spec.name], ...(spec.address ? { static_ips: [spec.address] } : {}) } },
    ...(spec.dns && spec.dns.length > 0 ? { dns_server: spec.dns } : {}),
    devices: [],
    portmappings: [],
    publish_image_ports: false,
    mounts: spec.mounts.map((m) => ({
      destination: m.target,
      source: m.source,
      type: 'bind',
      options: ['rbind', 'rprivate', 'nosuid', 'nodev', m.readOnly ? 'ro' : 'rw'],
    })),
    // The image's VOLUMEs were checked to be covered by mounts; none is made in the store.
    image_volume_mode: 'ignore',
    read_only_filesystem: spec.readOnlyRootfs === true,
    // catatonit as PID 1 reaps zombies and forwards SIGTERM.
    init: true,
    restart_policy: 'no',
    remove: false,
    log_configuration: { driver: 'k8s-file' },
  };
}
