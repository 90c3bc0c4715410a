/**
 * Shape checks of a {@link VmSpec}, before anything touches the file system or libvirt. A bad
 * spec is refused with `invalid_request`, never clamped or repaired.
 */
import { isIPv4 } from 'node:net';
import { posix } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { checkSpaceId, checkVmId } from './names.js';
import { checkPartition } from './partition.js';
import type { VmSpec } from './types.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bounds of a spec; outside them it is refused. */
export const VM_BOUNDS = {
  vcpus: { min: 1, max: 64 },
  /** The protocol's minimum; 1 TiB is a typo, not a VM on a space node. */
  memoryBytes: { min: 64 * MiB, max: 1024 * 1024 * MiB },
  cmdlineChars: 1024,
  pathChars: 4096,
} as const;

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
/** Printable ASCII: the guest kernel's command line needs nothing else, and XML 1.0 forbids most control characters. */
const CMDLINE = /^[\x20-\x7e]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

const SPEC_KEYS = new Set([
  'network',
  'spaceId',
  'vmId',
  'name',
  'vcpus',
  'memoryBytes',
  'boot',
  'diskPath',
  'consoleLogPath',
  'cgroupPartition',
  'runAsUid',
  'storageRoot',
]);

function invalid(field: string, message: string): OcsError {
  return new OcsError('invalid_request', `${field} ${message}`, { field });
}

function checkInt(field: string, value: unknown, min: number, max: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(field, `must be an integer from ${min} to ${max}`);
  }
}

/** An absolute, normalized host path without control characters (symlinks are checked later, on disk). */
export function checkPath(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > VM_BOUNDS.pathChars) {
    throw invalid(field, 'must be an absolute path');
  }
  if (!value.startsWith('/') || value === '/' || CONTROL.test(value)) throw invalid(field, 'must be an absolute path');
  if (posix.normalize(value) !== value || value.endsWith('/')) {
    throw invalid(field, 'must be normalized (no ".", "..", "//" or trailing "/")');
  }
}

/** The host paths a spec names, with the field each came from. */
export function specPaths(spec: VmSpec): { field: string; path: string }[] {
  const out: { field: string; path: string }[] = [];
  if (spec.boot.kind === 'kernel') {
    out.push({ field: 'boot.kernel', path: spec.boot.kernel });
    if (spec.boot.initrd !== undefined) out.push({ field: 'boot.initrd', path: spec.boot.initrd });
  } else {
    out.push({ field: 'boot.disk', path: spec.boot.disk });
  }
  if (spec.diskPath !== undefined) out.push({ field: 'diskPath', path: spec.diskPath });
  out.push({ field: 'consoleLogPath', path: spec.consoleLogPath });
  return out;
}

function checkBoot(boot: unknown): void {
  if (typeof boot !== 'object' || boot === null) throw invalid('boot', 'must be an object');
  const b = boot as Record<string, unknown>;
  if (b.kind === 'kernel') {
    for (const k of Object.keys(b))
      if (!['kind', 'kernel', 'initrd', 'cmdline'].includes(k)) throw invalid(`boot.${k}`, 'is not allowed');
    checkPath('boot.kernel', b.kernel);
    if (b.initrd !== undefined) checkPath('boot.initrd', b.initrd);
    if (b.cmdline !== undefined) {
      if (typeof b.cmdline !== 'string' || b.cmdline.length > VM_BOUNDS.cmdlineChars || !CMDLINE.test(b.cmdline)) {
        throw invalid('boot.cmdline', `must be printable ASCII, at most ${VM_BOUNDS.cmdlineChars} characters`);
      }
    }
  } else if (b.kind === 'disk') {
    for (const k of Object.keys(b)) if (!['kind', 'disk'].includes(k)) throw invalid(`boot.${k}`, 'is not allowed');
    checkPath('boot.disk', b.disk);
  } else {
    throw invalid('boot.kind', 'must be "kernel" or "disk"');
  }
}

/**
 * Refuses a spec that is malformed or out of bounds: unknown fields, bad ids or name, vCPUs
 * outside 1..64, memory outside 64 MiB..1 TiB, paths that are not absolute and normalized, the
 * same file used twice, a path outside `storageRoot`, a partition libvirt would rename, uid 0.
 */
/** A locally administered unicast MAC in lowercase (QEMU's `52:54:00:…` among them). */
const MAC = /^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/;

function checkNetwork(n: unknown): void {
  if (typeof n !== 'object' || n === null) throw invalid('network', 'must be an object');
  const o = n as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!['bridge', 'mac', 'gateway'].includes(k)) throw invalid(`network.${k}`, 'is not allowed');
  if (typeof o.bridge !== 'string' || !/^ocsbr[0-9a-f]{10}$/.test(o.bridge))
    throw invalid('network.bridge', 'must be a space bridge (ocsbr + 10 hex digits)');
  if (typeof o.mac !== 'string' || !MAC.test(o.mac))
    throw invalid('network.mac', 'must be a locally administered unicast MAC in lowercase');
  const [addr, bits, extra] = typeof o.gateway === 'string' ? o.gateway.split('/') : [];
  if (
    !addr ||
    !isIPv4(addr) ||
    bits === undefined ||
    !/^[0-9]{1,2}$/.test(bits) ||
    Number(bits) > 30 ||
    extra !== undefined
  )
    throw invalid('network.gateway', 'must be an IPv4 address with its prefix, e.g. 10.128.0.1/26');
}

export function validateSpec(spec: unknown): asserts spec is VmSpec {
  if (typeof spec !== 'object' || spec === null) throw invalid('spec', 'must be an object');
  const s = spec as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!SPEC_KEYS.has(k)) throw invalid(k, 'is not allowed');
  checkSpaceId(s.spaceId);
  checkVmId(s.vmId);
  if (typeof s.name !== 'string' || !NAME.test(s.name))
    throw invalid('name', 'must be 1 to 63 of [a-z0-9_.-], starting with a letter or digit');
  checkInt('vcpus', s.vcpus, VM_BOUNDS.vcpus.min, VM_BOUNDS.vcpus.max);
  checkInt('memoryBytes', s.memoryBytes, VM_BOUNDS.memoryBytes.min, VM_BOUNDS.memoryBytes.max);
  checkBoot(s.boot);
  if (s.diskPath !== undefined) checkPath('diskPath', s.diskPath);
  checkPath('consoleLogPath', s.consoleLogPath);
  if (s.cgroupPartition !== undefined) checkPartition(s.cgroupPartition);
  // Never root: a QEMU escape must not be a host root shell.
  if (s.runAsUid !== undefined) checkInt('runAsUid', s.runAsUid, 1, 0xffff_fffe);
  if (s.network !== undefined) checkNetwork(s.network);
  const paths = specPaths(spec as VmSpec);
  const seen = new Set<string>();
  for (const { field, path } of paths) {
    if (seen.has(path)) throw invalid(field, 'names a file already used by another field');
    seen.add(path);
  }
  if (s.storageRoot !== undefined) {
    checkPath('storageRoot', s.storageRoot);
    const root = s.storageRoot;
    for (const { field, path } of paths)
      if (!path.startsWith(`${root}/`)) throw invalid(field, 'must lie inside storageRoot');
  }
}
