/**
 * Encrypted per-space storage. The daemon builds one driver from its config with
 * {@link createStorageDriver}; everything above talks to the {@link StorageDriver} interface.
 */
import { existsSync } from 'node:fs';
import { run } from '../exec.js';
import { FscryptStorageDriver } from './fscrypt.js';
import type { StorageDriver } from './types.js';
import { ZfsStorageDriver } from './zfs.js';

export type {
  ImageReceiver,
  ImageSink,
  ImageSource,
  SeedPlan,
  SeedReceiver,
  SeedState,
  SeedSink,
  SeedSource,
  StorageImage,
  SpaceStorageInfo,
  StorageDriver,
} from './types.js';
export {
  KEY_BYTES,
  MIN_SPACE_BYTES,
  MIN_VOLUME_BYTES,
  MAX_ID_LENGTH,
  assertId,
  assertKey,
  assertSize,
  readsImages,
  receivesImages,
  receivesSeeds,
  sendsSeeds,
} from './types.js';
export { checkExt4Image } from './image-check.js';
export { FscryptStorageDriver, DEFAULT_STORAGE_ROOT, type FscryptDriverOptions } from './fscrypt.js';
export { ZfsStorageDriver, type ZfsDriverOptions } from './zfs.js';
export { cipherImplementation, type CipherImplementation } from './cipher.js';

/** The daemon's `storage` config section. */
export interface StorageConfig {
  backend: 'fscrypt' | 'zfs';
  /** fscrypt: images and mounts; zfs: mountpoints. */
  root: string;
  /** zfs only: the pool (or parent dataset) to use. */
  pool?: string | undefined;
}

/**
 * Builds the configured driver after checking that the host has what it needs, so a node that
 * cannot encrypt fails at start with a clear message rather than at its first space.
 */
export async function createStorageDriver(config: StorageConfig): Promise<StorageDriver> {
  switch (config.backend) {
    case 'fscrypt': {
      for (const [tool, flag] of [
        ['fscrypt', '--version'],
        ['mkfs.ext4', '-V'],
        ['losetup', '--version'],
        // A restored image is checked by e2fsck and dumpe2fs in a bubblewrap sandbox.
        ['e2fsck', '-V'],
        ['bwrap', '--version'],
      ] as const) {
        await run(tool, [flag]).catch(() => {
          throw new Error(
            `storage backend fscrypt needs the ${tool} command (Debian packages fscrypt, e2fsprogs, util-linux)`,
          );
        });
      }
      return new FscryptStorageDriver({ root: config.root });
    }
    case 'zfs': {
      if (!config.pool) throw new Error('storage backend zfs needs storage.pool');
      if (!existsSync('/sys/module/zfs'))
        throw new Error('storage backend zfs needs the zfs kernel module, which is not loaded');
      await run('zfs', ['version']).catch(() => {
        throw new Error('storage backend zfs needs the zfs command (Debian package zfsutils-linux)');
      });
      return new ZfsStorageDriver({ pool: config.pool, root: config.root });
    }
  }
}
