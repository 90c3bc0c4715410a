/**
 * Hands a key to a tool that insists on opening a *file* and checking its size (Debian's fscrypt
 * 0.3 stats `--key` and refuses a pipe, whose size is 0). The key goes into an unnamed file on a
 * tmpfs (O_TMPFILE: it never has a name, never reaches a disk, vanishes with its last descriptor),
 * the descriptor is inherited by the child as fd 3 and opened there as /proc/self/fd/3, and the
 * bytes are overwritten with zeros before the descriptor is closed.
 */
import { closeSync, constants, openSync, statfsSync, writeSync } from 'node:fs';

const TMPFS_MAGIC = 0x01021994;
// <fcntl.h>: O_TMPFILE is __O_TMPFILE | O_DIRECTORY, and __O_TMPFILE is the same on every Linux architecture.
const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY;

/** The path a child sees for the first descriptor passed with `run(…, { fds: [fd] })`. */
export const CHILD_KEY_PATH = '/proc/self/fd/3';

/**
 * Calls `fn` with a descriptor of an unnamed tmpfs file holding `key`. Refuses to run if `dir` is
 * not a tmpfs, rather than ever putting a key on a disk.
 */
export async function withKeyFd<T>(key: Uint8Array, fn: (fd: number) => Promise<T>, dir = '/dev/shm'): Promise<T> {
  let type: number;
  try {
    type = statfsSync(dir).type;
  } catch (e) {
    throw new Error(`key hand-over directory ${dir} is unusable: ${(e as Error).message}`);
  }
  if (type !== TMPFS_MAGIC)
    throw new Error(`key hand-over directory ${dir} is not a tmpfs; refusing to place a key on a disk`);
  const fd = openSync(dir, O_TMPFILE | constants.O_RDWR, 0o600);
  try {
    if (writeSync(fd, key, 0, key.length, 0) !== key.length) throw new Error('short write while handing over a key');
    return await fn(fd);
  } finally {
    try {
      writeSync(fd, new Uint8Array(key.length), 0, key.length, 0);
    } finally {
      closeSync(fd);
    }
  }
}
