import { OcsError } from '@ocs/protocol';
import type { CgroupLimits } from './types.js';

/** Bounds for {@link CgroupLimits}; outside them a request is refused, not clamped. */
export const LIMIT_BOUNDS = {
  /** The kernel refuses a CFS quota under 1 ms, i.e. 10 millicores of a 100 ms period. */
  cpuMillicores: { min: 10, max: 1_024_000 },
  /** Below a few MiB nothing useful starts; above 1 PiB is a typo, not a machine. */
  memoryBytes: { min: 4 * 1024 * 1024, max: 2 ** 50 },
  /** PID_MAX_LIMIT on 64-bit kernels. */
  pids: { min: 1, max: 4_194_304 },
} as const;

/** The CFS period both drivers write; millicores × 100 is then the quota in µs. */
export const CPU_PERIOD_US = 100_000;

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const MAX_DEPTH = 16;

/**
 * Splits and checks a relative cgroup path. A segment must start with a letter, digit or `_`,
 * which also rules out `.`, `..` and hidden names; the empty path (the hierarchy root itself)
 * is refused so no caller can create, kill or remove at the root.
 */
export function parseCgroupPath(path: unknown): string[] {
  if (typeof path !== 'string' || path.length === 0 || path.length > 512) {
    throw new OcsError('invalid_request', 'a cgroup path must be a non-empty relative path');
  }
  const segments = path.split('/');
  if (segments.length > MAX_DEPTH || !segments.every((s) => SEGMENT.test(s))) {
    throw new OcsError(
      'invalid_request',
      'a cgroup path is made of up to 16 segments of [A-Za-z0-9_.-], not starting with "." or "-"',
      {
        field: 'path',
      },
    );
  }
  return segments;
}

function checkInt(field: keyof typeof LIMIT_BOUNDS, value: unknown): void {
  const { min, max } = LIMIT_BOUNDS[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new OcsError('invalid_request', `${field} must be an integer from ${min} to ${max}`, { field });
  }
}

/** Refuses limits that are not integers within {@link LIMIT_BOUNDS}. */
export function validateLimits(limits: CgroupLimits): void {
  if (typeof limits !== 'object' || limits === null) throw new OcsError('invalid_request', 'limits must be an object');
  checkInt('cpuMillicores', limits.cpuMillicores);
  checkInt('memoryBytes', limits.memoryBytes);
  if (limits.pids !== undefined) checkInt('pids', limits.pids);
}

/** Refuses anything but a plausible process id. */
export function validatePid(pid: unknown): asserts pid is number {
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid < 1 || pid > LIMIT_BOUNDS.pids.max) {
    throw new OcsError('invalid_request', 'pid must be a positive integer', { field: 'pid' });
  }
}
