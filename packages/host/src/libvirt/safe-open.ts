/**
 * Opening a file in a space's storage as root without being redirected: O_NOFOLLOW refuses a
 * symlink as the last component, and /proc/self/fd shows where the open really landed, which
 * catches a symlink (or a rename) anywhere above it. Both checks are on the open descriptor,
 * so there is no window between checking and reading.
 */
import { constants } from 'node:fs';
import { open, readlink, type FileHandle } from 'node:fs/promises';
import { OcsError } from '@ocs/protocol';

/** Opens `path` read-only; resolves undefined when it does not exist. Refuses anything but a regular file at exactly `path`. */
export async function openExactFile(field: string, path: string): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new OcsError('conflict', `${field} is a symbolic link`, { field });
    throw err;
  }
  try {
    const landed = await readlink(`/proc/self/fd/${fh.fd}`);
    if (landed !== path)
      throw new OcsError('conflict', `${field} is not at its recorded path (moved or reached through a link)`, {
        field,
      });
    if (!(await fh.stat()).isFile()) throw new OcsError('conflict', `${field} is not a regular file`, { field });
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}
