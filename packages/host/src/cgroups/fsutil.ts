/** Small file helpers with the quirks of cgroupfs in mind. */
import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, readdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

export async function readText(file: string): Promise<string> {
  return (await readFile(file, 'utf8')).trim();
}

/** `undefined` when the file does not exist (controller absent, or an older kernel). */
export async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readText(file);
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Writes `value` with exactly one write(2) on an fd opened without O_CREAT/O_TRUNC: cgroupfs
 * parses each write as one command, and some files (cgroup.kill, devices.deny) are write-only.
 */
export async function writeValue(file: string, value: string): Promise<void> {
  let fh;
  try {
    fh = await open(file, constants.O_WRONLY);
    await fh.write(value);
  } catch (err) {
    const e = new Error(`cannot write "${value}" to ${file}: ${errno(err) ?? String(err)}`, { cause: err });
    (e as NodeJS.ErrnoException).code = errno(err);
    throw e;
  } finally {
    await fh?.close();
  }
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return false;
    throw err;
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errno(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Names of the child directories (child groups); empty when `dir` does not exist. */
export async function childDirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch (err) {
    // ENODEV: the group was removed while we read it.
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR' || errno(err) === 'ENODEV') return [];
    throw err;
  }
}

/** Every group under `dir` (relative to it, including ''), deepest first, so rmdir can follow the order. */
export async function subtreeDeepestFirst(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of await childDirs(join(dir, rel)))
    out.push(...(await subtreeDeepestFirst(dir, rel ? `${rel}/${name}` : name)));
  if (rel !== '' || (await isDirectory(dir))) out.push(rel);
  return out;
}

/**
 * Pids listed in a cgroup.procs file; empty when the group is gone. A group removed between
 * the open and the read (runc removing a container's group while we walk the tree) reads as
 * ENODEV: gone too. A threaded group of cgroup v2 (libvirt makes QEMU's vCPU and emulator
 * groups threaded in the unified hierarchy) refuses cgroup.procs with EOPNOTSUPP: its
 * processes are listed by the threaded domain above it.
 */
export async function readPids(file: string): Promise<number[]> {
  let text: string | undefined;
  try {
    text = await readOptional(file);
  } catch (err) {
    if (errno(err) === 'ENODEV' || errno(err) === 'EOPNOTSUPP' || errno(err) === 'ENOTSUP') return [];
    throw err;
  }
  if (!text) return [];
  return text
    .split('\n')
    .map(Number)
    .filter((n) => Number.isSafeInteger(n) && n > 0);
}

/** `true` when this call created the directory, `false` when it already existed. */
export async function mkdirOnce(path: string): Promise<boolean> {
  try {
    await mkdir(path);
    // 0755 whatever the daemon's umask (the unit's is 0077), as systemd makes its own groups: a
    // container's root is an unprivileged id on the host, and the kernel walks the path to its
    // cgroup namespace's root with that id when the container mounts cgroup2 (EACCES on a 0700
    // ancestor: runc's "error mounting cgroup to rootfs at /sys/fs/cgroup: permission denied").
    await chmod(path, 0o755);
    return true;
  } catch (err) {
    if (errno(err) === 'EEXIST' && (await isDirectory(path))) return false;
    throw new Error(`cannot create cgroup ${path}: ${errno(err) ?? String(err)}`, { cause: err });
  }
}

/**
 * Removes an empty group. EBUSY right after its last task died is normal (the kernel unlinks
 * exiting tasks asynchronously), so it is retried until `deadline`.
 */
export async function rmdirGroup(path: string, deadline: number): Promise<void> {
  for (;;) {
    try {
      await rmdir(path);
      return;
    } catch (err) {
      if (errno(err) === 'ENOENT') return;
      if (errno(err) !== 'EBUSY' || Date.now() > deadline) {
        throw new Error(`cannot remove cgroup ${path}: ${errno(err) ?? String(err)}`, { cause: err });
      }
      await sleep(20);
    }
  }
}

/** SIGKILL, ignoring processes that are already gone. */
export function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if (errno(err) !== 'ESRCH') throw err;
  }
}

/**
 * Kills whatever `list` reports until it reports nothing; re-listing each round catches a
 * process forked between the listing and the kill. Fails with the stragglers after `timeoutMs`.
 * Refuses outright if the caller itself is listed: freezing or killing it would never return.
 */
export async function killUntilEmpty(
  what: string,
  list: () => Promise<number[]>,
  kill: (pids: number[]) => Promise<void>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    const pids = await list();
    if (pids.length === 0) return;
    if (pids.includes(process.pid))
      throw new Error(`refusing to kill cgroup ${what}: it holds this process (${process.pid})`);
    if (round > 0 && Date.now() > deadline) {
      throw new Error(`cgroup ${what} still holds processes ${pids.slice(0, 20).join(', ')} after ${timeoutMs} ms`);
    }
    await kill(pids);
    await sleep(20);
  }
}

/** Parses "key value" lines (memory.events, cpu.stat, memory.oom_control, pids.events). */
export function parseKeyed(text: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^-?\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

/**
 * Parses a v1 byte counter. The "no limit" value (PAGE_COUNTER_MAX × page size) exceeds
 * Number's safe range, so anything from 2^62 up means unlimited.
 */
export function parseBytes(text: string): number {
  const n = BigInt(text);
  return n >= 2n ** 62n || n < 0n ? Number.POSITIVE_INFINITY : Number(n);
}
