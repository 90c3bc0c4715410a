/**
 * What an owner asked for (a container's command and environment, a VM's boot files and kernel
 * command line) is the tenant's content: it is kept inside the space's encrypted storage, one
 * root-only file per workload, never in the daemon's database, which holds ids, names, shares and
 * states only. The broker reads a record only while the space is unlocked (every operation needs
 * an active space).
 */
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

const ID = /^(vol|ctr|vm)_[a-z0-9]{1,40}$/;

function recordPath(dir: string, id: string): string {
  if (!ID.test(id)) throw new Error(`not a workload id: ${id}`);
  return join(dir, `${id}.json`);
}

/** A record under a workload's new id (a restored space's); nothing when there is none or it moved before. */
export async function renameRecord(dir: string, from: string, to: string): Promise<void> {
  await rename(recordPath(dir, from), recordPath(dir, to)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Writes the record atomically (a crash leaves the old one or the new one, never half). */
export async function writeRecord(dir: string, id: string, record: unknown): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = recordPath(dir, id);
  const tmp = `${path}.tmp`;
  await rm(tmp, { force: true });
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(JSON.stringify(record));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** The record, or undefined when there is none (a workload made before records existed). */
export async function readRecord<T>(dir: string, id: string): Promise<T | undefined> {
  const text = await readFile(recordPath(dir, id), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

export async function removeRecord(dir: string, id: string): Promise<void> {
  await rm(recordPath(dir, id), { force: true });
}
