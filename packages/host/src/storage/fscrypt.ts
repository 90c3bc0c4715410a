/**
 * fscrypt storage: one sparse ext4 image per space (its size is the space's limit, enforced by the
 * kernel — this also works where filesystem quotas are missing), on a loop device mounted at
 * <root>/mnt/<id>. Inside it:
 *
 *   data/            v2 policy, raw_key protector holding the space key  (SpaceStorageInfo.mountpoint)
 *   volumes/<vid>/   one v2 policy and raw_key protector per volume, with the volume's own key
 *   .ocs/volumes/    declared volume sizes (not secret)
 *   .fscrypt/        fscrypt's wrapped keys (root-only)
 *
 * Lock evicts the keys, unmounts and detaches the loop device: an idle locked space costs no
 * kernel objects, and nothing mounted can leak cached plaintext. Unlock attaches and mounts again.
 */
import {
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { CommandError, run as defaultRun, type Runner } from '../exec.js';
import { FscryptCli } from './fscrypt-cli.js';
import { Revert } from '../revert.js';
import {
  allocatedBytes,
  attachLoop,
  createSparseImage,
  detachLoops,
  findMount,
  parseMountinfo,
  loopDevicesFor,
  mkfsEncryptedExt4,
  mountExt4,
  shredFile,
  syncFs,
  trimFs,
  unmount,
  usedBytesMounted,
  usedBytesUnmounted,
} from './loop.js';
import {
  assertId,
  assertKey,
  assertSize,
  MIN_SPACE_BYTES,
  MIN_VOLUME_BYTES,
  type ImageReceiver,
  type ImageSink,
  type ImageSource,
  type StorageImage,
  type SpaceStorageInfo,
  type StorageDriver,
} from './types.js';
import { KeyedLock } from '../keyed-lock.js';
import { checkExt4Image } from './image-check.js';

/** Configuration of {@link FscryptStorageDriver}. */
export interface FscryptDriverOptions {
  /** Holds images/ and mnt/. Default /var/lib/ocs-storage. */
  root?: string;
  /** A tmpfs where keys are handed to the fscrypt tool in unnamed files. Default /dev/shm. */
  keyTmpfs?: string;
  /** Command runner (tests wrap it to watch argv). */
  run?: Runner;
}

export const DEFAULT_STORAGE_ROOT = '/var/lib/ocs-storage';
const BLOCK = 4096;
/** The suffix of an image being received: `list()` names its space, so an orphan is found and removed. */
const INCOMING = '.incoming';
// fscrypt takes `MOUNTPOINT:ID` flags, so the root may not contain ':' (nor anything a CLI could misread).
const ROOT_RE = /^\/[A-Za-z0-9._/+-]*$/;

interface Paths {
  image: string;
  /** An image being received (a restore): never attached or mounted, until checked and renamed to `image`. */
  incoming: string;
  fs: string;
  data: string;
  volumes: string;
  volumeMeta: string;
}

/** The fscrypt backend (see the module comment for the on-disk layout). */
export class FscryptStorageDriver implements StorageDriver, ImageSource, ImageSink {
  readonly kind = 'fscrypt' as const;
  private readonly configuredRoot: string;
  private canonicalRoot: string | undefined;
  private sharedMountRoot = false;
  private readonly run: Runner;
  private readonly cli: FscryptCli;
  private readonly mutex = new KeyedLock();
  // `losetup -f` picks the first free device; two at once could race for it.
  private readonly attachMutex = new KeyedLock();

  constructor(opts: FscryptDriverOptions = {}) {
    const root = resolve(opts.root ?? DEFAULT_STORAGE_ROOT);
    if (!ROOT_RE.test(root))
      throw new Error(`storage root ${JSON.stringify(root)} must be an absolute path of [A-Za-z0-9._/+-]`);
    this.configuredRoot = root;
    this.run = opts.run ?? defaultRun;
    this.cli = new FscryptCli(this.run, opts.keyTmpfs ?? '/dev/shm');
  }

  /** The storage root, canonical once it exists (mountinfo and fscrypt speak canonical paths). */
  get root(): string {
    if (this.canonicalRoot === undefined && existsSync(this.configuredRoot))
      this.canonicalRoot = realpathSync(this.configuredRoot);
    return this.canonicalRoot ?? this.configuredRoot;
  }

  private paths(id: string): Paths {
    const fs = join(this.root, 'mnt', id);
    return {
      image: join(this.root, 'images', `${id}.img`),
      incoming: join(this.root, 'images', `${id}${INCOMING}`),
      fs,
      data: join(fs, 'data'),
      volumes: join(fs, 'volumes'),
      volumeMeta: join(fs, '.ocs', 'volumes'),
    };
  }

  async create(id: string, sizeBytes: number, key: Uint8Array): Promise<SpaceStorageInfo> {
    assertId(id);
    assertSize(sizeBytes, MIN_SPACE_BYTES);
    assertKey(key);
    const size = Math.floor(sizeBytes / BLOCK) * BLOCK;
    return this.mutex.run(id, async () => {
      const p = this.paths(id);
      if (existsSync(p.image)) throw new OcsError('conflict', 'storage for this space already exists');
      await this.cli.ensureGlobalConfig();
      // The root must be traversable: each space's unprivileged process reaches its own home below it.
      mkdirSync(this.root, { recursive: true, mode: 0o711 });
      mkdirSync(join(this.root, 'images'), { recursive: true, mode: 0o700 });
      mkdirSync(join(this.root, 'mnt'), { recursive: true, mode: 0o711 });
      const q = this.paths(id); // the root may have just become canonical
      createSparseImage(q.image, size);
      const undo = new Revert();
      undo.push('tear down', () => this.teardown(id));
      try {
        await mkfsEncryptedExt4(this.run, q.image);
        await this.mount(id);
        await this.cli.setupFilesystem(q.fs);
        mkdirSync(q.data, { mode: 0o700 });
        mkdirSync(q.volumes, { mode: 0o711 });
        mkdirSync(q.volumeMeta, { recursive: true, mode: 0o700 });
        await this.cli.encrypt(q.data, `ocs-${id}`, key);
      } catch (e) {
        await undo.run();
        throw e;
      }
      return this.readInfo(id);
    });
  }

  async lock(id: string): Promise<void> {
    assertId(id);
    await this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      if (findMount(p.fs)) {
        try {
          for (const dir of [...this.volumeDirs(p), p.data]) {
            if (await this.isUnlocked(dir)) await this.cli.lock(dir);
          }
          await syncFs(this.run, p.fs);
          await unmount(this.run, p.fs);
        } catch (e) {
          // A file of the space open on the node (fscrypt's "incompletely locked", a busy
          // unmount): said as such, so the lock can report what it waits for.
          if (e instanceof CommandError && /incompletely locked|still open|target is busy/i.test(e.stderr))
            throw new OcsError(
              'conflict',
              'a file of the space is still open on the node: its key goes once it is closed',
            );
          throw e;
        }
      }
      await detachLoops(this.run, p.image);
    });
  }

  async unlock(id: string, key: Uint8Array): Promise<void> {
    assertId(id);
    assertKey(key);
    await this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      const undo = new Revert();
      // A refused key leaves the space exactly as locked as it was: not even mounted.
      if (await this.mount(id)) undo.push('unmount', () => this.release(id));
      try {
        if (await this.isUnlocked(p.data)) throw new OcsError('space_unlocked', 'the space is already unlocked');
        await this.cli.unlock(p.data, key);
      } catch (e) {
        await undo.run();
        throw e;
      }
    });
  }

  async rotateKey(id: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void> {
    assertId(id);
    assertKey(oldKey, 'oldKey');
    assertKey(newKey, 'newKey');
    await this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      await this.withMounted(id, async () => {
        await this.cli.rotate(p.fs, p.data, `ocs-${id}`, oldKey, newKey);
        await trimFs(this.run, p.fs);
      });
    });
  }

  async destroy(id: string): Promise<void> {
    assertId(id);
    await this.mutex.run(id, async () => {
      const p = this.paths(id);
      // Never attached or mounted, and not to be: the image was not checked.
      await rm(p.incoming, { force: true });
      if (existsSync(p.image)) {
        await this.teardown(id);
        return;
      }
      if (findMount(p.fs)) await unmount(this.run, p.fs);
      removeDir(p.fs);
    });
  }

  async info(id: string): Promise<SpaceStorageInfo> {
    assertId(id);
    return this.mutex.run(id, async () => {
      this.requireExists(id);
      return this.readInfo(id);
    });
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = readdirSync(join(this.root, 'images'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const ids: string[] = [];
    for (const n of names) {
      const id = n.endsWith('.img') ? n.slice(0, -4) : n.endsWith(INCOMING) ? n.slice(0, -INCOMING.length) : '';
      try {
        assertId(id);
        ids.push(id);
      } catch {
        /* not one of ours */
      }
    }
    return [...new Set(ids)].sort();
  }

  async createVolume(id: string, volumeId: string, sizeBytes: number, key: Uint8Array): Promise<{ path: string }> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    assertSize(sizeBytes, MIN_VOLUME_BYTES);
    assertKey(key);
    return this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      await this.requireUnlocked(p);
      const dir = join(p.volumes, volumeId);
      if (existsSync(dir)) throw new OcsError('conflict', 'the volume already exists');
      const spaceBytes = statSync(p.image).size;
      const declared = this.volumeDirs(p).reduce((sum, d) => sum + this.volumeSize(p, d), 0);
      if (declared + sizeBytes > spaceBytes) {
        throw new OcsError('budget_exceeded', "the volume does not fit in the space's storage", {
          resource: 'storageBytes',
          requested: sizeBytes,
          available: Math.max(0, spaceBytes - declared),
        });
      }
      mkdirSync(dir, { mode: 0o700 });
      const meta = join(p.volumeMeta, `${volumeId}.json`);
      try {
        writeFileSync(`${meta}.new`, JSON.stringify({ sizeBytes }), { mode: 0o600 });
        renameSync(`${meta}.new`, meta);
        await this.cli.encrypt(dir, `ocs-${id}-vol-${volumeId}`, key);
      } catch (e) {
        rmSync(dir, { recursive: true, force: true });
        rmSync(meta, { force: true });
        throw e;
      }
      return { path: dir };
    });
  }

  volumePath(id: string, volumeId: string): string {
    assertId(id);
    assertId(volumeId, 'volumeId');
    return join(this.paths(id).volumes, volumeId);
  }

  async unlockVolume(id: string, volumeId: string, key: Uint8Array): Promise<void> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    assertKey(key);
    await this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      await this.requireUnlocked(p);
      const dir = this.requireVolume(p, volumeId);
      if (await this.isUnlocked(dir)) throw new OcsError('conflict', 'the volume is already unlocked');
      await this.cli.unlock(dir, key);
    });
  }

  async destroyVolume(id: string, volumeId: string): Promise<void> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    await this.mutex.run(id, async () => {
      const p = this.paths(id);
      if (!existsSync(p.image)) return;
      await this.withMounted(id, async () => {
        const dir = join(p.volumes, volumeId);
        if (existsSync(dir)) {
          if (await this.isUnlocked(dir)) await this.cli.lock(dir);
          await this.cli.shredPolicy(p.fs, dir).catch(() => undefined); // never got a policy: nothing to shred
          // Deleting needs no key: the kernel unlinks by the encrypted names.
          rmSync(dir, { recursive: true, force: true });
        }
        rmSync(join(p.volumeMeta, `${volumeId}.json`), { force: true });
        await trimFs(this.run, p.fs);
      });
    });
  }

  /**
   * The image file of a locked space, read-only: locked means unmounted and detached, so the
   * file is a consistent filesystem holding only ciphertext. Whoever reads it must keep the
   * space locked until it closes the image (the space service refuses an unlock meanwhile).
   */
  async openImage(id: string): Promise<StorageImage> {
    assertId(id);
    return this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      if (findMount(p.fs) || (await loopDevicesFor(this.run, p.image)).length > 0)
        throw new OcsError('space_unlocked', "the space's storage is open: lock the space first");
      const fh = await open(p.image, constants.O_RDONLY | constants.O_NOFOLLOW);
      const bytes = (await fh.stat()).size;
      return {
        bytes,
        read: async (into, position) => (await fh.read(into, 0, into.length, position)).bytesRead,
        close: () => fh.close(),
      };
    });
  }

  /**
   * Receives a restored space's image into `<id>.incoming` beside the images: sparse (a range
   * never written stays a hole), root's, 0600. `commit` checks its filesystem in a sandbox and
   * only then renames it to the space's image; until then nothing attaches or mounts it.
   */
  async receiveImage(id: string, bytes: number): Promise<ImageReceiver> {
    assertId(id);
    assertSize(bytes, MIN_SPACE_BYTES, 'image bytes');
    if (bytes % BLOCK !== 0)
      throw new OcsError('archive_malformed', `the archive's image size is not a whole number of ${BLOCK}-byte blocks`);
    return this.mutex.run(id, async () => {
      await this.cli.ensureGlobalConfig();
      mkdirSync(this.root, { recursive: true, mode: 0o711 });
      mkdirSync(join(this.root, 'images'), { recursive: true, mode: 0o700 });
      mkdirSync(join(this.root, 'mnt'), { recursive: true, mode: 0o711 });
      const p = this.paths(id);
      if (existsSync(p.image)) throw new OcsError('conflict', 'storage for this space already exists');
      const fh = await open(
        p.incoming,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        await fh.close();
      };
      try {
        await fh.truncate(bytes);
      } catch (err) {
        await close();
        await rm(p.incoming, { force: true });
        throw err;
      }
      return {
        write: async (data, position) => {
          if (position < 0 || position + data.length > bytes)
            throw new OcsError('archive_corrupt', 'a chunk lies outside the image');
          for (let at = 0; at < data.length;) {
            const { bytesWritten } = await fh.write(data, at, data.length - at, position + at);
            at += bytesWritten;
          }
        },
        commit: async () => {
          await fh.sync();
          await close();
          await checkExt4Image(this.run, p.incoming);
          await this.mutex.run(id, async () => {
            if (existsSync(p.image)) throw new OcsError('conflict', 'storage for this space already exists');
            renameSync(p.incoming, p.image);
          });
        },
        abort: async () => {
          await close().catch(() => undefined);
          await rm(p.incoming, { force: true });
        },
      };
    });
  }

  async renameVolume(id: string, from: string, to: string): Promise<void> {
    assertId(id);
    assertId(from, 'volumeId');
    assertId(to, 'volumeId');
    await this.mutex.run(id, async () => {
      const p = this.requireExists(id);
      if (!findMount(p.fs)) throw new OcsError('space_locked', 'the space is locked');
      // The volumes' directory and their declared sizes are not encrypted: no key is needed.
      for (const [a, b] of [
        [join(p.volumes, from), join(p.volumes, to)],
        [join(p.volumeMeta, `${from}.json`), join(p.volumeMeta, `${to}.json`)],
      ] as const) {
        if (existsSync(a) && !existsSync(b)) renameSync(a, b);
      }
    });
  }

  /** Drops the shared bind mount of <root>/mnt once no space is mounted under it. */
  async close(): Promise<void> {
    const dir = join(this.root, 'mnt');
    const under = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) =>
      m.mountpoint.startsWith(`${dir}/`),
    );
    if (under.length > 0) return;
    if (findMount(dir)?.mountpoint === dir) await this.run('umount', [dir]);
    this.sharedMountRoot = false;
  }

  // ---- internals (callers hold the space's mutex) ----

  private requireExists(id: string): Paths {
    const p = this.paths(id);
    if (!existsSync(p.image)) throw new OcsError('not_found', 'no storage for this space');
    return p;
  }

  private async requireUnlocked(p: Paths): Promise<void> {
    if (!findMount(p.fs) || !(await this.isUnlocked(p.data))) throw new OcsError('space_locked', 'the space is locked');
  }

  private requireVolume(p: Paths, volumeId: string): string {
    const dir = join(p.volumes, volumeId);
    if (!existsSync(dir)) throw new OcsError('not_found', 'no such volume');
    return dir;
  }

  private volumeDirs(p: Paths): string[] {
    let names: string[];
    try {
      names = readdirSync(p.volumes);
    } catch {
      return [];
    }
    return names
      .filter((n) => {
        try {
          assertId(n);
          return true;
        } catch {
          return false;
        }
      })
      .map((n) => join(p.volumes, n));
  }

  private volumeSize(p: Paths, dir: string): number {
    const name = dir.slice(p.volumes.length + 1);
    try {
      const { sizeBytes } = JSON.parse(readFileSync(join(p.volumeMeta, `${name}.json`), 'utf8')) as {
        sizeBytes?: unknown;
      };
      return typeof sizeBytes === 'number' ? sizeBytes : 0;
    } catch {
      return 0;
    }
  }

  /** False for a directory that has no policy (yet). */
  private async isUnlocked(dir: string): Promise<boolean> {
    if (!existsSync(dir)) return false;
    try {
      return (await this.cli.status(dir)).unlocked;
    } catch {
      return false;
    }
  }

  /** Attaches (or reuses) the loop device and mounts it; true if this call did the mounting. */
  /**
   * Makes <root>/mnt a shared mount point. Mount namespaces made later (libvirt's QEMU, runc)
   * copy every mount; with the host's private propagation our unmount would not reach those
   * copies, and the loop device of a locked or destroyed space would stay busy. As a shared
   * peer (slave in their copies) our unmounts propagate to them.
   */
  private ensureSharedMountRoot(): Promise<void> {
    if (this.sharedMountRoot) return Promise.resolve();
    // One in flight: concurrent creates would otherwise each stack a bind mount on the root,
    // and close() would unmount only the top one.
    this.sharingRoot ??= (async () => {
      const dir = join(this.root, 'mnt');
      mkdirSync(dir, { recursive: true, mode: 0o711 });
      if (findMount(dir)?.mountpoint !== dir) await this.run('mount', ['--bind', dir, dir]);
      await this.run('mount', ['--make-shared', dir]);
      this.sharedMountRoot = true;
    })().finally(() => {
      this.sharingRoot = undefined;
    });
    return this.sharingRoot;
  }

  private sharingRoot: Promise<void> | undefined;

  private async mount(id: string): Promise<boolean> {
    const p = this.paths(id);
    if (findMount(p.fs)) return false;
    await this.ensureSharedMountRoot();
    const existing = await loopDevicesFor(this.run, p.image);
    const undo = new Revert();
    let dev = existing[0];
    if (dev === undefined) {
      dev = await this.attachMutex.run('attach', () => attachLoop(this.run, p.image));
      undo.push('detach loop', () => detachLoops(this.run, p.image));
    }
    // Mode 0 while unmounted, so nothing unprivileged can put plaintext where the space will appear.
    mkdirSync(p.fs, { recursive: true, mode: 0o000 });
    try {
      await mountExt4(this.run, dev, p.fs);
    } catch (e) {
      await undo.run();
      throw e;
    }
    return true;
  }

  private async release(id: string): Promise<void> {
    const p = this.paths(id);
    if (findMount(p.fs)) await unmount(this.run, p.fs);
    await detachLoops(this.run, p.image);
  }

  /** Runs `fn` with the filesystem mounted (no key needed for metadata), restoring the locked state after. */
  private async withMounted<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const mountedHere = await this.mount(id);
    const undo = new Revert();
    if (mountedHere) undo.push('unmount', () => this.release(id));
    let result: T;
    try {
      result = await fn();
    } catch (e) {
      await undo.run();
      throw e;
    }
    if (mountedHere) await this.release(id);
    return result;
  }

  private async readInfo(id: string): Promise<SpaceStorageInfo> {
    const p = this.paths(id);
    const sizeBytes = statSync(p.image).size;
    const mounted = findMount(p.fs) !== undefined;
    const unlocked = mounted && (await this.isUnlocked(p.data));
    const usedBytes = mounted
      ? usedBytesMounted(p.fs, sizeBytes)
      : await usedBytesUnmounted(this.run, p.image, sizeBytes);
    return { id, sizeBytes, usedBytes, unlocked, mountpoint: p.data, root: p.fs };
  }

  /**
   * Locks, shreds every wrapped key in .fscrypt (so the image is undecryptable even if its blocks
   * survive on the host disk), unmounts, detaches and deletes. Safe to repeat after a crash.
   */
  private async teardown(id: string): Promise<void> {
    const p = this.paths(id);
    let mounted = false;
    try {
      await this.mount(id);
      mounted = true;
    } catch {
      // Not mountable (half-made or damaged): drop the image's blocks instead, best effort.
      await this.run('fallocate', [
        '--punch-hole',
        '--offset',
        '0',
        '--length',
        String(statSync(p.image).size),
        p.image,
      ]).catch(() => undefined);
    }
    if (mounted) {
      for (const dir of [...this.volumeDirs(p), p.data]) {
        if (await this.isUnlocked(dir)) await this.cli.lock(dir);
      }
      for (const sub of ['protectors', 'policies']) {
        const d = join(p.fs, '.fscrypt', sub);
        if (existsSync(d)) for (const f of readdirSync(d)) shredFile(join(d, f));
      }
      await syncFs(this.run, p.fs);
      await unmount(this.run, p.fs);
    }
    await detachLoops(this.run, p.image);
    removeDir(p.fs);
    unlinkSync(p.image);
  }

  /** Host bytes the image occupies (for tests and metrics). */
  hostBytes(id: string): number {
    assertId(id);
    return allocatedBytes(this.requireExists(id).image);
  }

  /** Path of the space's image (for tests that search the raw bytes). */
  imagePath(id: string): string {
    assertId(id);
    return this.paths(id).image;
  }
}

function removeDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
