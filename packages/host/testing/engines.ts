import { readFile } from 'node:fs/promises';
import type { CgroupDriver } from '#src/cgroups/types.js';

/**
 * Whether a space's engine API service process is alive, asked of the kernel: a ping is a
 * request and resets the service's idle timer (conmon and the namespace anchor do not count).
 * Tests and benchmarks wait on it for an engine to go idle; the daemon never needs to know.
 */
export async function engineServiceRunning(cgroups: CgroupDriver, engineGroup: string): Promise<boolean> {
  for (const pid of await cgroups.processes(engineGroup).catch(() => [] as number[])) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('\0system\0service\0')) return true;
  }
  return false;
}
