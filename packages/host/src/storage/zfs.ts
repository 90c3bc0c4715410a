/**
 * ZFS native encryption (production backend), written against the OpenZFS CLI (zfs-create(8),
 * zfs-load-key(8), zfs-destroy(8)):
 *
 *   <pool>/ocs/<id>                 encryption root: aes-256-gcm, keyformat=raw, keylocation=prompt,
 *                                   quota = reservation = the space's size, mounted at <root>/mnt/<id>
 *   <pool>/ocs/<id>/data            inherits the space key (SpaceStorageInfo.mountpoint)
 *   <pool>/ocs/<id>/volumes         canmount=off, inherits the space key
 *   <pool>/ocs/<id>/volumes/<vid>   its own encryption root and key, quota = reservation = its size
 *
 * Keys only ever travel on the command's stdin. Lock unmounts (deepest first) and unloads every
 * loaded key under the space; destroy is `zfs destroy -r`, which takes the wrapped keys with it.
 *
 * Modes are the fscrypt driver's, so the node's layout holds on either backend (the conformance
 * suite checks both): <root> and <root>/mnt 0711, <root>/mnt/<id> 0000 while nothing is mounted
 * on it and 0755 as the space's filesystem root, data/ 0700, volumes/ 0711, each volume 0700.
 * A new dataset's root is 0755 whatever it is for, and ZFS makes a missing mountpoint 0755 too:
 * so the driver makes each mountpoint itself first (what shows while a dataset is unmounted)
 * and sets the root's mode once mounted (it is kept in the dataset).
 */
import { chmodSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { CommandError, run as defaultRun, type Runner } from '../exec.js';
import {
  assertId,
  assertKey,
  assertSize,
  MIN_SPACE_BYTES,
  MIN_VOLUME_BYTES,
  type SpaceStorageInfo,
  type StorageDriver,
} from './types.js';
import { KeyedLock } from '../keyed-lock.js';
import { Revert } from '../revert.js';

/** Configuration of {@link ZfsStorageDriver}. */
export interface ZfsDriverOptions {
  /** Pool (or parent dataset) under which `ocs/<id>` datasets are made. */
  pool: string;
  /** Mountpoints go under <root>/mnt. Default /var/lib/ocs-storage. */
  root?: string;
  /** Command runner; a test injects one to check the exact argv. */
  run?: Runner;
}

const POOL_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_.:-]+)*$/;
const ROOT_RE = /^\/[A-Za-z0-9._/+-]*$/;
const ENCRYPTION = ['-o', 'encryption=aes-256-gcm', '-o', 'keyformat=raw', '-o', 'keylocation=prompt'];

/** Makes `dir` (if missing) and gives it exactly `mode`. Every directory above it is root's: no link can be swapped in. */
function dirWithMode(dir: string, mode: number): void {
  mkdirSync(dir, { recursive: true, mode });
  chmodSync(dir, mode);
}

function isMissing(e: unknown): boolean {
  return e instanceof CommandError && /does not exist/i.test(e.stderr);
}

function isWrongKey(e: unknown): boolean {
  return e instanceof CommandError && /incorrect key/i.test(e.stderr);
}

/** The ZFS backend (see the module comment for the dataset layout). */
export class ZfsStorageDriver implements StorageDriver {
  readonly kind = 'zfs' as const;
  private readonly parent: string;
  private readonly root: string;
  private readonly run: Runner;
  private readonly mutex = new KeyedLock();

  constructor(opts: ZfsDriverOptions) {
    if (!POOL_RE.test(opts.pool)) throw new Error(`zfs pool ${JSON.stringify(opts.pool)} is not a valid dataset name`);
    const root = resolve(opts.root ?? '/var/lib/ocs-storage');
    if (!ROOT_RE.test(root))
      throw new Error(`storage root ${JSON.stringify(root)} must be an absolute path of [A-Za-z0-9._/+-]`);
    this.parent = `${opts.pool}/ocs`;
    this.root = root;
    this.run = opts.run ?? defaultRun;
  }

  private ds(id: string): string {
    return `${this.parent}/${id}`;
  }

  private vol(id: string, volumeId: string): string {
    return `${this.parent}/${id}/volumes/${volumeId}`;
  }

  private mountpoint(id: string): string {
    return join(this.root, 'mnt', id);
  }

  async create(id: string, sizeBytes: number, key: Uint8Array): Promise<SpaceStorageInfo> {
    assertId(id);
    assertSize(sizeBytes, MIN_SPACE_BYTES);
    assertKey(key);
    return this.mutex.run(id, async () => {
      const ds = this.ds(id);
      if (await this.exists(ds)) throw new OcsError('conflict', 'storage for this space already exists');
      if (!(await this.exists(this.parent))) {
        await this.run('zfs', ['create', '-o', 'canmount=off', '-o', 'mountpoint=none', this.parent]);
      }
      // The root must be traversable: each space's unprivileged process reaches its own home below it.
      mkdirSync(this.root, { recursive: true, mode: 0o711 });
      mkdirSync(join(this.root, 'mnt'), { recursive: true, mode: 0o711 });
      const mp = this.mountpoint(id);
      // Mode 0 while unmounted, so nothing unprivileged can put plaintext where the space will appear.
      dirWithMode(mp, 0o000);
      const size = String(sizeBytes);
      const undo = new Revert();
      undo.push('remove mountpoint', () => removeEmptyDirs(mp));
      try {
        await this.run(
          'zfs',
          [
            'create',
            ...ENCRYPTION,
            '-o',
            `quota=${size}`,
            '-o',
            `reservation=${size}`,
            '-o',
            `mountpoint=${mp}`,
            '-o',
            'setuid=off',
            '-o',
            'devices=off',
            // POSIX ACLs, and xattrs in the dnode (fast, and what Linux tools expect): containers'
            // layers need them (fuse-overlayfs 1.10 copies ACLs and fails with EOPNOTSUPP
            // without). Volumes inherit both.
            '-o',
            'acltype=posixacl',
            '-o',
            'xattr=sa',
            ds,
          ],
          { stdin: key },
        );
        undo.push('destroy dataset', () => this.run('zfs', ['destroy', '-r', ds]));
        chmodSync(mp, 0o755);
        dirWithMode(join(mp, 'data'), 0o700);
        await this.run('zfs', ['create', `${ds}/data`]);
        chmodSync(join(mp, 'data'), 0o700);
        dirWithMode(join(mp, 'volumes'), 0o711);
        await this.run('zfs', ['create', '-o', 'canmount=off', `${ds}/volumes`]);
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
      await this.requireExists(id);
      await this.closeTree(this.ds(id));
    });
  }

  async unlock(id: string, key: Uint8Array): Promise<void> {
    assertId(id);
    assertKey(key);
    await this.mutex.run(id, async () => {
      const ds = await this.requireExists(id);
      if ((await this.props(ds, ['keystatus'])).keystatus === 'available')
        throw new OcsError('space_unlocked', 'the space is already unlocked');
      await this.loadKey(ds, key);
      await this.run('zfs', ['mount', ds]);
      await this.run('zfs', ['mount', `${ds}/data`]);
    });
  }

  async rotateKey(id: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void> {
    assertId(id);
    assertKey(oldKey, 'oldKey');
    assertKey(newKey, 'newKey');
    await this.mutex.run(id, async () => this.changeKey(await this.requireExists(id), oldKey, newKey));
  }

  async destroy(id: string): Promise<void> {
    assertId(id);
    await this.mutex.run(id, async () => {
      const ds = this.ds(id);
      if (await this.exists(ds)) {
        await this.closeTree(ds);
        await this.run('zfs', ['destroy', '-r', ds]);
      }
      removeEmptyDirs(this.mountpoint(id));
    });
  }

  async info(id: string): Promise<SpaceStorageInfo> {
    assertId(id);
    return this.mutex.run(id, async () => {
      await this.requireExists(id);
      return this.readInfo(id);
    });
  }

  async list(): Promise<string[]> {
    const names = await this.children(this.parent);
    return names.filter((n) => {
      try {
        assertId(n);
        return true;
      } catch {
        return false;
      }
    });
  }

  async createVolume(id: string, volumeId: string, sizeBytes: number, key: Uint8Array): Promise<{ path: string }> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    assertSize(sizeBytes, MIN_VOLUME_BYTES);
    assertKey(key);
    return this.mutex.run(id, async () => {
      const ds = await this.requireExists(id);
      await this.requireUnlocked(ds);
      const vol = this.vol(id, volumeId);
      if (await this.exists(vol)) throw new OcsError('conflict', 'the volume already exists');
      // The space's quota covers its data and every volume's reservation (`used` counts both),
      // so what is left is quota - used. Data counts too: in a full space even the volume's
      // mountpoint directory cannot be made (ZFS then says ENOENT, seen in the guest).
      const p = await this.props(ds, ['quota', 'used']);
      const available = Math.max(0, Number(p.quota) - Number(p.used));
      if (sizeBytes > available) {
        throw new OcsError('budget_exceeded', "the volume does not fit in the space's storage", {
          resource: 'storageBytes',
          requested: sizeBytes,
          available,
        });
      }
      const size = String(sizeBytes);
      const path = join(this.mountpoint(id), 'volumes', volumeId);
      dirWithMode(path, 0o700); // what a locked volume shows, as on fscrypt
      try {
        await this.run('zfs', ['create', ...ENCRYPTION, '-o', `quota=${size}`, '-o', `reservation=${size}`, vol], {
          stdin: key,
        });
      } catch (e) {
        removeEmptyDirs(path);
        throw e;
      }
      chmodSync(path, 0o700);
      return { path };
    });
  }

  volumePath(id: string, volumeId: string): string {
    assertId(id);
    assertId(volumeId, 'volumeId');
    return join(this.mountpoint(id), 'volumes', volumeId);
  }

  async unlockVolume(id: string, volumeId: string, key: Uint8Array): Promise<void> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    assertKey(key);
    await this.mutex.run(id, async () => {
      await this.requireUnlocked(await this.requireExists(id));
      const vol = await this.requireVolume(id, volumeId);
      if ((await this.props(vol, ['keystatus'])).keystatus === 'available')
        throw new OcsError('conflict', 'the volume is already unlocked');
      await this.loadKey(vol, key);
      await this.run('zfs', ['mount', vol]);
    });
  }

  async destroyVolume(id: string, volumeId: string): Promise<void> {
    assertId(id);
    assertId(volumeId, 'volumeId');
    await this.mutex.run(id, async () => {
      const vol = this.vol(id, volumeId);
      if (!(await this.exists(vol))) return;
      await this.closeTree(vol);
      await this.run('zfs', ['destroy', '-r', vol]);
      removeEmptyDirs(join(this.mountpoint(id), 'volumes', volumeId));
    });
  }

  async close(): Promise<void> {
    // Nothing of its own: datasets belong to spaces.
  }

  // ---- internals ----

  private async exists(ds: string): Promise<boolean> {
    try {
      await this.run('zfs', ['list', '-H', '-o', 'name', ds]);
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  private async requireExists(id: string): Promise<string> {
    const ds = this.ds(id);
    if (!(await this.exists(ds))) throw new OcsError('not_found', 'no storage for this space');
    return ds;
  }

  private async requireVolume(id: string, volumeId: string): Promise<string> {
    const vol = this.vol(id, volumeId);
    if (!(await this.exists(vol))) throw new OcsError('not_found', 'no such volume');
    return vol;
  }

  private async requireUnlocked(ds: string): Promise<void> {
    if ((await this.props(ds, ['keystatus'])).keystatus !== 'available')
      throw new OcsError('space_locked', 'the space is locked');
  }

  /** `zfs get -Hp` of a few properties, as a record. */
  private async props(ds: string, names: string[]): Promise<Record<string, string>> {
    const { stdout } = await this.run('zfs', ['get', '-H', '-p', '-o', 'property,value', names.join(','), ds]);
    const out: Record<string, string> = {};
    for (const line of stdout.split('\n')) {
      const [k, v] = line.split('\t');
      if (k && v !== undefined) out[k] = v;
    }
    return out;
  }

  /** Names of the direct child filesystems of `ds` (empty if `ds` does not exist). */
  private async children(ds: string): Promise<string[]> {
    let stdout: string;
    try {
      ({ stdout } = await this.run('zfs', ['list', '-H', '-o', 'name', '-t', 'filesystem', '-d', '1', ds]));
    } catch (e) {
      if (isMissing(e)) return [];
      throw e;
    }
    return stdout
      .split('\n')
      .filter((n) => n.startsWith(`${ds}/`))
      .map((n) => n.slice(ds.length + 1))
      .sort();
  }

  private async loadKey(ds: string, key: Uint8Array, dryRun = false): Promise<void> {
    try {
      await this.run('zfs', ['load-key', ...(dryRun ? ['-n'] : []), ds], { stdin: key });
    } catch (e) {
      if (isWrongKey(e)) throw new OcsError('unwrap_failed', 'the key does not open this storage');
      throw e;
    }
  }

  /** Unmounts everything under `ds` (deepest first), then unloads every key loaded there. */
  private async closeTree(ds: string): Promise<void> {
    const { stdout } = await this.run('zfs', [
      'list',
      '-H',
      '-o',
      'name,mounted,encryptionroot,keystatus',
      '-t',
      'filesystem',
      '-r',
      ds,
    ]);
    const rows = stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'))
      .sort((a, b) => (b[0] ?? '').split('/').length - (a[0] ?? '').split('/').length);
    for (const [name, mounted] of rows) if (name && mounted === 'yes') await this.run('zfs', ['unmount', name]);
    for (const [name, , root, keystatus] of rows)
      if (name && name === root && keystatus === 'available') await this.run('zfs', ['unload-key', name]);
  }

  /** change-key needs the current key loaded: prove `oldKey` (dry run, or a real load), change, then restore the locked state. */
  private async changeKey(ds: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void> {
    const wasLoaded = (await this.props(ds, ['keystatus'])).keystatus === 'available';
    await this.loadKey(ds, oldKey, wasLoaded);
    try {
      await this.run('zfs', ['change-key', '-o', 'keyformat=raw', '-o', 'keylocation=prompt', ds], { stdin: newKey });
    } finally {
      if (!wasLoaded) await this.run('zfs', ['unload-key', ds]);
    }
  }

  private async readInfo(id: string): Promise<SpaceStorageInfo> {
    const p = await this.props(this.ds(id), ['quota', 'used', 'keystatus']);
    return {
      id,
      sizeBytes: Number(p.quota),
      usedBytes: Number(p.used),
      unlocked: p.keystatus === 'available',
      mountpoint: join(this.mountpoint(id), 'data'),
      root: this.mountpoint(id),
    };
  }
}

/** Removes `dir` and the empty directories below it; stops at anything that is not empty (never deletes data). */
function removeEmptyDirs(dir: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const e of entries) removeEmptyDirs(join(dir, e));
  try {
    rmdirSync(dir);
  } catch {
    /* not empty or not a directory: leave it */
  }
}
