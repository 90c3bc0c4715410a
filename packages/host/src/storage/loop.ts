/**
 * One sparse ext4 image per space on a loop device. Everything is found again from the kernel
 * (`losetup -j`, /proc/self/mountinfo), never remembered, so a restarted daemon picks up where the
 * last one stopped.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  realpathSync,
  statfsSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { Runner } from '../exec.js';

/** One line of /proc/self/mountinfo that matters here. */
export interface MountEntry {
  mountpoint: string;
  fstype: string;
  source: string;
}

/** Undoes the octal escapes the kernel uses for space, tab, newline and backslash in mountinfo. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/self/mountinfo text (exported for tests). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    const mp = fields[4];
    const fstype = fields[sep + 1];
    const source = fields[sep + 2];
    if (sep < 0 || mp === undefined || fstype === undefined || source === undefined) continue;
    out.push({ mountpoint: unescapeMount(mp), fstype, source: unescapeMount(source) });
  }
  return out;
}

/** The topmost mount at exactly `path` (canonical), if any. */
export function findMount(path: string): MountEntry | undefined {
  const canonical = existsSync(path) ? realpathSync(path) : path;
  const hits = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint === canonical);
  return hits[hits.length - 1];
}

/** Creates a sparse file of `sizeBytes` that must not exist yet (0600). */
export function createSparseImage(path: string, sizeBytes: number): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
}

/** Host bytes the image really occupies (sparse files occupy only what was written). */
export function allocatedBytes(path: string): number {
  const fd = openSync(path, 'r');
  try {
    return fstatSync(fd).blocks * 512;
  } finally {
    closeSync(fd);
  }
}

/** ext4 with the encrypt feature; 4 KiB blocks (page size, which v2 policies like) and no root reserve, so the image size is the space's usable size. */
export async function mkfsEncryptedExt4(run: Runner, image: string): Promise<void> {
  await run('mkfs.ext4', ['-q', '-F', '-O', 'encrypt', '-b', '4096', '-m', '0', image], { timeoutMs: 300_000 });
}

/** Loop devices backed by `image` (usually zero or one). */
export async function loopDevicesFor(run: Runner, image: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-n', '-O', 'NAME', '-j', image]);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\/dev\/loop\d+$/.test(l));
}

/** Attaches `image` to a free loop device (created on demand by the kernel) and returns its path. */
export async function attachLoop(run: Runner, image: string): Promise<string> {
  const { stdout } = await run('losetup', ['-f', '--show', image]);
  const dev = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup returned an unexpected device name for ${image}`);
  return dev;
}

/** Detaches every loop device of `image`; throws if one stays (still in use somewhere). */
export async function detachLoops(run: Runner, image: string): Promise<void> {
  for (const dev of await loopDevicesFor(run, image)) await run('losetup', ['-d', dev]);
  // A busy device is only marked for auto-clear; give the kernel a moment, then say so.
  for (let i = 0; i < 20; i++) {
    const left = await loopDevicesFor(run, image);
    if (left.length === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`loop device for ${image} is still in use elsewhere and could not be detached`);
}

/** Mounts an ext4 loop device without device files or setuid binaries. */
export async function mountExt4(run: Runner, dev: string, mountpoint: string): Promise<void> {
  await run('mount', ['-t', 'ext4', '-o', 'nodev,nosuid', dev, mountpoint]);
}

export async function unmount(run: Runner, mountpoint: string): Promise<void> {
  await run('umount', [mountpoint]);
}

/** Flushes one filesystem (syncfs), not the whole host. */
export async function syncFs(run: Runner, path: string): Promise<void> {
  await run('sync', ['-f', path]);
}

/** Returns the freed blocks of a mounted image to the host (discard on a loop device punches holes in the file), so deleted blocks leave the image. Best effort. */
export async function trimFs(run: Runner, mountpoint: string): Promise<void> {
  await syncFs(run, mountpoint);
  await run('fstrim', [mountpoint]).catch(() => undefined);
}

/** Used bytes of a mounted filesystem whose whole size is `sizeBytes` (metadata overhead included). */
export function usedBytesMounted(mountpoint: string, sizeBytes: number): number {
  const s = statfsSync(mountpoint);
  return Math.max(0, sizeBytes - s.bfree * s.bsize);
}

/** Used bytes from an unmounted image's superblock (accurate after a clean unmount). */
export async function usedBytesUnmounted(run: Runner, image: string, sizeBytes: number): Promise<number> {
  const { stdout } = await run('dumpe2fs', ['-h', image]);
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(stdout);
    if (!m?.[1]) throw new Error(`dumpe2fs did not report "${name}" for ${image}`);
    return Number(m[1]);
  };
  return Math.max(0, sizeBytes - field('Free blocks') * field('Block size'));
}

/**
 * Overwrites a small file in place with random bytes, flushes it, then unlinks it. ext4 in its
 * default data=ordered mode rewrites file data in place, so the old bytes leave the image.
 */
export function shredFile(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  try {
    const size = fstatSync(fd).size;
    if (size > 0) {
      const noise = randomFillSync(Buffer.alloc(size));
      writeSync(fd, noise, 0, size, 0);
      fsyncSync(fd);
    }
  } finally {
    closeSync(fd);
  }
  unlinkSync(path);
}
