/**
 * The storage driver contract shared by every backend, and the input checks that run before an
 * id, a size or a key gets anywhere near a path, an argv or the kernel.
 */
import { OcsError } from '@ocs/protocol';

/** What the host says about one space's storage. */
export interface SpaceStorageInfo {
  id: string;
  /** The size limit the kernel enforces (the image or quota size; may be a little under what was asked). */
  sizeBytes: number;
  usedBytes: number;
  /** True while the space key is loaded and its data can be read. */
  unlocked: boolean;
  /** The encrypted directory where the space keeps its data (exists only while unlocked). */
  mountpoint: string;
  /** The top of the space's own storage: its data and its volumes, nothing of another space's. */
  root: string;
}

/**
 * Encrypted storage, one encryption root per space and one per volume. One real implementation
 * per backend; the daemon picks one by config. The host is the source of truth: a driver keeps no
 * state only in memory, so a new instance after a restart finds everything again.
 */
export interface StorageDriver {
  readonly kind: 'fscrypt' | 'zfs';
  /** Creates the space's encrypted storage of `sizeBytes`, encrypted under `key` (32 random bytes from the caller), and leaves it unlocked and mounted. The caller zeroes the key afterwards. */
  create(id: string, sizeBytes: number, key: Uint8Array): Promise<SpaceStorageInfo>;
  /** Removes the key from the kernel so the data is unreadable (and unmounts where the backend needs to). Idempotent. */
  lock(id: string): Promise<void>;
  /** Loads the key; a wrong key → OcsError('unwrap_failed') and stays locked. Already unlocked → OcsError('space_unlocked'). */
  unlock(id: string, key: Uint8Array): Promise<void>;
  /** Re-wraps the data under newKey without rewriting data (fscrypt: add a new raw_key protector, remove the old one; zfs: change-key). Needs the old key, in either state; the state is kept. */
  rotateKey(id: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void>;
  /** Kills access, shreds key material (fscrypt protector/policy metadata; zfs destroy -r) and deletes the storage. Idempotent. */
  destroy(id: string): Promise<void>;
  /** OcsError('not_found') if unknown. */
  info(id: string): Promise<SpaceStorageInfo>;
  /** Ids present on the host, for reconciliation. */
  list(): Promise<string[]>;
  /** Per-resource encryption: a volume is its own encryption root inside the space (a fresh key from the caller), usable only while the space is unlocked. Left unlocked; locking the space locks it. */
  createVolume(id: string, volumeId: string, sizeBytes: number, key: Uint8Array): Promise<{ path: string }>;
  /** Wrong key → OcsError('unwrap_failed'); space locked → OcsError('space_locked'). */
  unlockVolume(id: string, volumeId: string, key: Uint8Array): Promise<void>;
  /** Where the volume's files are (whether or not it exists). */
  volumePath(id: string, volumeId: string): string;
  /** Shreds the volume's key material and deletes it; works in any space state. Idempotent. */
  destroyVolume(id: string, volumeId: string): Promise<void>;
  /** Releases what the driver holds for itself (not the spaces): for a root about to be removed. */
  close(): Promise<void>;
}

/**
 * An optional ability of a backend: a space's storage read exactly as it lies on disk (its
 * ciphertext, with the filesystem around it), for a space archive. Only while the space is
 * locked: nothing is mounted, so the image is consistent and no key is in the kernel.
 */
export interface ImageSource {
  /** `space_unlocked` while the space's storage is open; `not_found` for an unknown space. */
  openImage(id: string): Promise<StorageImage>;
}

/** A locked space's image, open for reading. */
export interface StorageImage {
  /** The image's size; for a `stream`, a bound it stays under (`archiveImageBytes`). */
  bytes: number;
  /**
   * A stream (ZFS's raw send) rather than a file: read in order from 0, each read where the one
   * before ended, its length known when a read returns 0. Its chunks go out whole, zeros too.
   */
  stream?: boolean;
  /** Reads up to `into.length` bytes at `position`; returns how many (0 at the end). */
  read(into: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * An optional ability of a backend: a new space's storage made from an image that came from
 * outside (a restored archive). The image is untrusted until `commit` has checked it; nothing of
 * it is attached or mounted before.
 */
export interface ImageSink {
  /**
   * Starts receiving an image of `bytes` (a stream's bound) for the new space `id` of
   * `sizeBytes` of storage (no storage of that id may exist). Until `commit` or `abort` the
   * space's storage is neither usable nor mountable; `destroy(id)` removes it too.
   */
  receiveImage(id: string, bytes: number, sizeBytes: number): Promise<ImageReceiver>;
  /**
   * Gives a restored space's volume its new id (a fork's workloads get ids of their own), with
   * what the backend keeps of it by id. Idempotent: a volume already renamed is left as it is.
   */
  renameVolume(id: string, from: string, to: string): Promise<void>;
}

/** An image being received: written at offsets (a stream's in order, each where the one before ended), then checked and kept, or dropped. */
export interface ImageReceiver {
  write(data: Uint8Array, position: number): Promise<void>;
  /** Flushes the image, checks its filesystem (`archive_filesystem_invalid`), and makes it the space's storage, locked. */
  commit(): Promise<void>;
  /** Removes everything received. Idempotent, and harmless after `commit` failed. */
  abort(): Promise<void>;
  /**
   * An increment onto a held seed only: the stream ends here, cut short, and the seed stays
   * for the increment to be sent again (what this one brought goes when the next begins).
   */
  stop?(): Promise<void>;
}

/**
 * An optional ability of a backend whose images can be sent as a difference (ZFS): a move sends
 * a seed of the space while it still runs, then, locked, only what changed since, so the space
 * is unavailable for the difference rather than the whole. The seed goes one dataset at a time
 * (`SeedPlan.datasets`, parents first), each a stream a cut connection does not lose: the
 * receiving end keeps what arrived and says where to go on (`SeedState`).
 */
export interface SeedSource {
  /** Takes the space's seed as it is now (open or locked); `base` names it for `openImage`'s `since`. */
  openSeed(id: string): Promise<SeedPlan>;
  /**
   * One dataset of the seed `base` (`conflict` if the space's seed is not that one any more);
   * with `token` (the receiving end's `SeedState.partial`), only what that end still lacks.
   */
  openSeedPart(id: string, o: { base: string; dataset: string; token?: string }): Promise<StorageImage>;
  /** The locked space's image; with `since`, only what changed after that seed (`conflict` if it is not the space's seed). */
  openImage(id: string, o?: { since?: string }): Promise<StorageImage>;
  /** Forgets the space's seed. Idempotent. */
  dropSeed(id: string): Promise<void>;
  /** Spaces that hold a seed. */
  listSeeds(): Promise<string[]>;
}

/** A seed taken: its name, and the datasets it is sent as, in order. */
export interface SeedPlan {
  base: string;
  /** Relative to the space: `.` (its top), then `data`, `volumes`, `volumes/<id>`… */
  datasets: string[];
}

/** What a receiving end holds of a seed: the datasets it has whole, and the one it has in part. */
export interface SeedState {
  held: string[];
  /** A dataset cut short, and the token its source resumes it from (`openSeedPart`'s `token`). */
  partial?: { dataset: string; token: string };
}

/** The receiving end of {@link SeedSource}. */
export interface SeedSink {
  /**
   * Receives one dataset of a seed for the new space `id` and holds it, unchecked and
   * unusable, for its increment: `.` first (a new seed: nothing else may be held), then each
   * under its parent; with `resume`, the rest of the one `seedState` says is partial.
   */
  receiveSeed(
    id: string,
    bytes: number,
    sizeBytes: number,
    o: { dataset: string; resume?: boolean },
  ): Promise<SeedReceiver>;
  /** What is held of the seed for `id` (nothing: `held` empty). */
  seedState(id: string): Promise<SeedState>;
  /** With `onSeed`, the image is an increment onto the seed held for `id` (`conflict` if none is). */
  receiveImage(id: string, bytes: number, sizeBytes: number, o?: { onSeed?: boolean }): Promise<ImageReceiver>;
}

/** A seed's dataset being received: written in order, then held (the whole stream taken), or stopped. */
export interface SeedReceiver {
  write(data: Uint8Array, position: number): Promise<void>;
  /** Waits until the stream is taken whole (`archive_filesystem_invalid` if it was refused). */
  hold(): Promise<void>;
  /** The stream ends here, cut short: what arrived stays, for the source to resume. Idempotent. */
  stop(): Promise<void>;
  /** Removes everything received of the seed, every dataset. Idempotent. */
  abort(): Promise<void>;
}

export function sendsSeeds(d: StorageDriver): d is StorageDriver & ImageSource & SeedSource {
  return typeof (d as Partial<SeedSource>).openSeed === 'function';
}

export function receivesSeeds(d: StorageDriver): d is StorageDriver & ImageSink & SeedSink {
  return typeof (d as Partial<SeedSink>).receiveSeed === 'function';
}

export function receivesImages(d: StorageDriver): d is StorageDriver & ImageSink {
  return typeof (d as Partial<ImageSink>).receiveImage === 'function';
}

export function readsImages(d: StorageDriver): d is StorageDriver & ImageSource {
  return typeof (d as Partial<ImageSource>).openImage === 'function';
}

/** Every key handed to a driver: 32 random bytes. */
export const KEY_BYTES = 32;
/** Smallest space: an ext4 image with a journal and room for data. */
export const MIN_SPACE_BYTES = 16 * 1024 * 1024;
export const MIN_VOLUME_BYTES = 1024 * 1024;
export const MAX_ID_LENGTH = 64;

// Leading character is alphanumeric so an id can never be read as an option by a CLI.
const ID_RE = /^[a-z0-9][a-z0-9_-]*$/;

/** Throws invalid_request unless `id` is a safe space or volume id ([a-z0-9_-], starts alphanumeric, ≤ 64). */
export function assertId(id: unknown, what = 'id'): asserts id is string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH || !ID_RE.test(id)) {
    throw new OcsError(
      'invalid_request',
      `${what} must be 1-${MAX_ID_LENGTH} characters of [a-z0-9_-], starting with a letter or digit`,
      {
        field: what,
      },
    );
  }
}

/** Throws invalid_request unless `n` is a whole number of bytes ≥ `min`. */
export function assertSize(n: unknown, min: number, what = 'sizeBytes'): asserts n is number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
    throw new OcsError('invalid_request', `${what} must be a whole number of bytes, at least ${min}`, {
      field: what,
      minimum: min,
    });
  }
}

/** Throws invalid_request unless `key` is exactly 32 bytes. Says nothing about its content. */
export function assertKey(key: unknown, what = 'key'): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
    throw new OcsError('invalid_request', `${what} must be ${KEY_BYTES} bytes`, { field: what });
  }
}
