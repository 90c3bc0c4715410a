/**
 * Per-volume keys. Each volume is its own encryption root with a fresh random key; the key is
 * kept in the space's own encrypted storage (root-only `node/keys/`), so it is at rest only
 * under the space key, which only the owner can unwrap: one unlock opens the space and all its
 * volumes, and a stolen disk opens none of them. Destroying the space shreds both.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { OcsError } from '@ocs/protocol';

const KEY_BYTES = 32;
const VOLUME_ID = /^vol_[a-z2-7]{20}$/;

function keyPath(keysDir: string, volumeId: string): string {
  if (!VOLUME_ID.test(volumeId)) throw new OcsError('invalid_request', 'not a volume id');
  return join(keysDir, `${volumeId}.key`);
}

export function newVolumeKey(): Uint8Array {
  return new Uint8Array(randomBytes(KEY_BYTES));
}

/** Writes the key 0600, refusing to follow or replace anything already at its path. */
export async function storeVolumeKey(keysDir: string, volumeId: string, key: Uint8Array): Promise<void> {
  const fh = await open(
    keyPath(keysDir, volumeId),
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.writeFile(key);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads a volume's key into a fresh array the caller zeroes; undefined when there is none. */
export async function readVolumeKey(keysDir: string, volumeId: string): Promise<Uint8Array | undefined> {
  let fh;
  try {
    fh = await open(keyPath(keysDir, volumeId), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const buf = await fh.readFile();
    const key = new Uint8Array(buf.length === KEY_BYTES ? buf : []);
    buf.fill(0);
    if (key.length !== KEY_BYTES) throw new Error(`volume key ${volumeId} is not ${KEY_BYTES} bytes`);
    return key;
  } finally {
    await fh.close();
  }
}

/** Overwrites and removes the key file; a missing one is fine. */
export async function shredVolumeKey(keysDir: string, volumeId: string): Promise<void> {
  const path = keyPath(keysDir, volumeId);
  try {
    const fh = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW);
    try {
      await fh.write(new Uint8Array(KEY_BYTES), 0, KEY_BYTES, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await rm(path, { force: true });
}
