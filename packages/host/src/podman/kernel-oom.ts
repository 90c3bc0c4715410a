/**
 * Whether the kernel's OOM killer killed a process of a podman container, read from the kernel's
 * own log. conmon's OOM report does not work on this kernel's hybrid cgroup v1 hierarchy (a
 * container killed at its memory limit is reported as a plain exit 137, also by podman's own CLI),
 * while the kernel names the memory cgroup it acted in: `oom-kill:…,oom_memcg=/…/libpod-<id>,…`.
 * Asked only for containers that exited with 137; each verdict is kept, since a kill is logged
 * before the exit it causes.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';

const verdicts = new Map<string, boolean>();

export function kernelOomKilled(dockerId: string): boolean {
  if (!/^[0-9a-f]{64}$/.test(dockerId)) return false;
  const known = verdicts.get(dockerId);
  if (known !== undefined) return known;
  const needle = `/libpod-${dockerId},`;
  let found = false;
  let fd: number;
  try {
    fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const buf = Buffer.alloc(8192);
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        // EPIPE: the record was overwritten while we read; the next one follows.
        if ((err as NodeJS.ErrnoException).code === 'EPIPE') continue;
        break; // EAGAIN: the end of the log.
      }
      if (n <= 0) break;
      const rec = buf.toString('latin1', 0, n);
      if (rec.includes('oom-kill:') && rec.includes(needle)) {
        found = true;
        break;
      }
    }
  } finally {
    closeSync(fd);
  }
  verdicts.set(dockerId, found);
  if (verdicts.size > 10_000) verdicts.delete(verdicts.keys().next().value as string);
  return found;
}
