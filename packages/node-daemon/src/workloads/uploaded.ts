/**
 * Files of a space's own storage as the broker (root) touches them: opened exactly (a link the
 * space planted anywhere on the path is refused, never followed), created without following or
 * replacing anything, and given to the uid that must use them.
 */
import { constants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { openExactFile } from '@ocs/host';
import { OcsError } from '@ocs/protocol';

/**
 * An uploaded file, opened as root so that a link the space planted anywhere on the path (the
 * file itself, or its `files/` directory, which the space owns) is refused, not followed.
 */
export async function openUploaded(path: string): Promise<FileHandle> {
  const fh = await openExactFile('file', path);
  if (!fh) throw new OcsError('not_found', 'no such uploaded file');
  return fh;
}

/** Gives a volume's top directory to `uid` unless it has it (opened without following a link). */
export async function chownRoot(dir: string, uid: number): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (st.uid !== uid || st.gid !== uid) await fh.chown(uid, uid);
  } finally {
    await fh.close();
  }
}

/** Creates `path` (never following or replacing anything there), fills it, and gives it to `uid`. */
export async function writeNewFile(
  path: string,
  uid: number,
  fill: (fh: FileHandle) => Promise<unknown>,
): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fill(fh);
    await fh.chown(uid, uid);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Copies one open file to another in 1 MiB steps (both handles stay the caller's). */
export async function copyHandle(from: FileHandle, to: FileHandle): Promise<void> {
  const buf = Buffer.alloc(1024 * 1024);
  for (let pos = 0; ;) {
    const { bytesRead } = await from.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) return;
    await to.write(buf, 0, bytesRead, pos);
    pos += bytesRead;
  }
}

export async function requireUploaded(path: string, name: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new OcsError('not_found', `no uploaded file ${name}`, { file: name });
}
