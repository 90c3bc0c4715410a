/**
 * Checks of the files a VM uses, on disk. The broker runs as root and libvirt opens these paths
 * as root, so each must be exactly the file the broker checked: no symlink anywhere on the
 * path (realpath must give the path back), the right type, and for disks a format that cannot
 * pull in other host files (no qcow2 backing file or external data file).
 */
import { constants } from 'node:fs';
import { lstat, open, realpath } from 'node:fs/promises';
import { dirname } from 'node:path';
import { OcsError } from '@ocs/protocol';

/** Formats the driver attaches; fixed at define, never probed by QEMU. */
export type DiskFormat = 'raw' | 'qcow2';

function invalid(field: string, message: string): OcsError {
  return new OcsError('invalid_request', `${field} ${message}`, { field });
}

/** Refuses a path that does not exist or has a symlink in any component. */
export async function checkNoSymlinks(field: string, path: string): Promise<void> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw invalid(field, 'does not exist');
    throw invalid(field, 'cannot be resolved');
  }
  if (real !== path) throw invalid(field, 'must not go through a symbolic link');
}

/** An existing regular file reached without symlinks. */
export async function checkRegularFile(field: string, path: string): Promise<void> {
  await checkNoSymlinks(field, path);
  if (!(await lstat(path)).isFile()) throw invalid(field, 'must be a regular file');
}

/** An existing directory reached without symlinks. */
export async function checkDirectory(field: string, path: string): Promise<void> {
  await checkNoSymlinks(field, path);
  if (!(await lstat(path)).isDirectory()) throw invalid(field, 'must be a directory');
}

/**
 * The console log's directory must exist (without symlinks); the log itself may be missing
 * (libvirt creates it) but if present must be a plain file with one link, so a hard link to
 * some other file cannot be truncated and overwritten by libvirt (which opens it as root).
 */
export async function checkConsoleTarget(path: string): Promise<void> {
  await checkDirectory('consoleLogPath', dirname(path));
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (st && (!st.isFile() || st.nlink !== 1))
    throw invalid('consoleLogPath', 'must be a regular file with a single link');
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 v3 incompatible feature bit: the guest data lives in another (named) file. */
const QCOW2_EXTERNAL_DATA = 1n << 2n;

/**
 * The format of a disk image, from its header: qcow2 (magic "QFI\xfb") or raw. A qcow2 image
 * that names a backing file or an external data file is refused: QEMU would open that other
 * path, which the owner chose and nobody checked. Encrypted qcow2 is refused (no secrets here).
 */
export async function diskFormat(field: string, path: string): Promise<DiskFormat> {
  await checkRegularFile(field, path);
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const head = Buffer.alloc(104);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead < 4 || head.readUInt32BE(0) !== QCOW2_MAGIC) return 'raw';
    if (bytesRead < 72) throw invalid(field, 'is a truncated qcow2 image');
    const version = head.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw invalid(field, `is a qcow2 image of unknown version ${version}`);
    if (head.readBigUInt64BE(8) !== 0n)
      throw invalid(field, 'is a qcow2 image with a backing file, which is not allowed');
    if (head.readUInt32BE(32) !== 0) throw invalid(field, 'is an encrypted qcow2 image, which is not supported');
    if (version === 3) {
      if (bytesRead < 80) throw invalid(field, 'is a truncated qcow2 image');
      if ((head.readBigUInt64BE(72) & QCOW2_EXTERNAL_DATA) !== 0n) {
        throw invalid(field, 'is a qcow2 image with an external data file, which is not allowed');
      }
    }
    return 'qcow2';
  } finally {
    await fh.close();
  }
}
