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
import { OcsError, archiveImageBytes } from '@ocs/protocol';
import { CommandError, run as defaultRun, type Runner } from '../exec.js';
import {
  assertId,
  assertKey,
  assertSize,
  MIN_SPACE_BYTES,
  MIN_VOLUME_BYTES,
  type ImageReceiver,
  type ImageSink,
  type ImageSource,
  type SeedPlan,
  type SeedReceiver,
  type SeedSink,
  type SeedSource,
  type SeedState,
  type SpaceStorageInfo,
  type StorageDriver,
  type StorageImage,
} from './types.js';
import { readCommand, writeCommand } from './zfs-stream.js';
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
/** The snapshot an export sends (one per space, shared by exports of the same locked space). */
const EXPORT_SNAPSHOT = 'ocs-export';
/**
 * The snapshot a move sends ahead while the space still runs (its seed): the image sent after
 * the lock is then only what changed since (`zfs send -i`). One per space.
 */
const SEED_SNAPSHOT = 'ocs-seed';
/**
 * What `zfs receive` sets on a received space, whatever its stream says: its mountpoint (and its
 * children's, inherited) is this node's, nothing of it is setuid, a device, shared or zoned. The
 * stream's other properties are checked or set after it is received (see `ZfsStorageDriver.receiveImage`).
 */
const RECEIVED_PROPERTIES = (mp: string) => [
  ...['-o', `mountpoint=${mp}`, '-o', 'setuid=off', '-o', 'devices=off'],
  ...['-o', 'acltype=posixacl', '-o', 'xattr=sa'],
  ...['-x', 'sharenfs', '-x', 'sharesmb', '-x', 'zoned', '-x', 'overlay'],
];

/**
 * What a seed's dataset below the top is received with: every property the stream could set
 * that reaches the host is the top's (inherited), so only the top's RECEIVED_PROPERTIES count.
 * (A dataset's own stream carries no properties unless sent with -p; ours are not, but the
 * receiving end does not take that on trust.)
 */
const RECEIVED_CHILD_PROPERTIES = [
  ...['mountpoint', 'setuid', 'devices', 'acltype', 'xattr'],
  ...['sharenfs', 'sharesmb', 'zoned', 'overlay', 'canmount'],
].flatMap((p) => ['-x', p]);
/** A seed's datasets, relative to the space: `.` is its top. */
const SEED_DATASET_RE = /^(\.|data|volumes|volumes\/[a-z0-9][a-z0-9_-]{0,63})$/;
/** A resume token as `zfs get receive_resume_token` prints it: `1-<checksum>-<length>-<packed nvlist>`, hex. */
const RESUME_TOKEN_RE = /^[0-9]+-[0-9a-f]{1,64}-[0-9a-f]{1,16}-[0-9a-f]{2,8192}$/;
/**
 * What a resume token may say (zfs-send(8) -t): where the stream stopped, which snapshot, and
 * how it was sent. Anything else (a base snapshot, a saved or redacted send) is not a seed's.
 */
const RESUME_TOKEN_KEYS = new Set([
  ...['object', 'offset', 'bytes', 'toguid', 'toname'],
  ...['embedok', 'largeblockok', 'compressok', 'rawok'],
]);

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
export class ZfsStorageDriver implements StorageDriver, ImageSource, ImageSink, SeedSource, SeedSink {
  readonly kind = 'zfs' as const;
  private readonly parent: string;
  /** Where restored spaces are received, each in a container of its own bounded by a quota. */
  private readonly incoming: string;
  /** Exports under way per space: the last one to close destroys the snapshot they share. */
  private readonly exports = new Map<string, number>();
  private readonly root: string;
  private readonly run: Runner;
  private readonly mutex = new KeyedLock();

  constructor(opts: ZfsDriverOptions) {
    if (!POOL_RE.test(opts.pool)) throw new Error(`zfs pool ${JSON.stringify(opts.pool)} is not a valid dataset name`);
    const root = resolve(opts.root ?? '/var/lib/ocs-storage');
    if (!ROOT_RE.test(root))
      throw new Error(`storage root ${JSON.stringify(root)} must be an absolute path of [A-Za-z0-9._/+-]`);
    this.parent = `${opts.pool}/ocs`;
    this.incoming = `${opts.pool}/ocs-incoming`;
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
      // An image received only in part (a restore cut short, a daemon killed meanwhile).
      const incoming = `${this.incoming}/${id}`;
      if (await this.exists(incoming)) await this.run('zfs', ['destroy', '-r', incoming]);
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
    // Images received in part count too: reconciliation removes those of no space.
    const names = [...new Set([...(await this.children(this.parent)), ...(await this.children(this.incoming))])];
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

  /**
   * A locked space as a raw replication stream (`zfs send -w -R`) of a snapshot of its datasets:
   * the blocks exactly as encrypted on disk, the encryption roots and their wrapped keys, and no
   * key loaded to make it. `bytes` is the stream's bound (`archiveImageBytes`). With `since` (the
   * base `openSeed` answered), only what changed since the seed (`-i`): `conflict` if the
   * space's seed is not that one any more.
   */
  async openImage(id: string, o: { since?: string } = {}): Promise<StorageImage> {
    assertId(id);
    const ds = this.ds(id);
    const snapshot = `${ds}@${EXPORT_SNAPSHOT}`;
    const quota = await this.mutex.run(id, async () => {
      await this.requireExists(id);
      const p = await this.props(ds, ['keystatus', 'quota']);
      if (p.keystatus === 'available')
        throw new OcsError('space_unlocked', "the space's storage is open: lock the space first");
      const open = this.exports.get(id) ?? 0;
      if (o.since !== undefined && (await this.seedOf(ds)) !== o.since)
        throw new OcsError('conflict', "the space's seed is not the one named: send its image whole");
      if (open === 0) {
        // One left by an export a crash cut short would be sent too (-R sends every snapshot),
        // and so would a seed no move uses.
        await this.destroySnapshots(ds, EXPORT_SNAPSHOT);
        if (o.since === undefined) await this.destroySnapshots(ds, SEED_SNAPSHOT);
        await this.run('zfs', ['snapshot', '-r', snapshot]);
      }
      this.exports.set(id, open + 1);
      return Number(p.quota);
    });
    const from = o.since === undefined ? [] : ['-i', `@${SEED_SNAPSHOT}`];
    return this.sendStream(['send', '-w', '-R', ...from, snapshot], quota, () =>
      this.mutex.run(id, async () => {
        const left = (this.exports.get(id) ?? 1) - 1;
        if (left > 0) return void this.exports.set(id, left);
        this.exports.delete(id);
        await this.destroySnapshots(ds, EXPORT_SNAPSHOT);
      }),
    );
  }

  /**
   * A move's seed: the space as it is now, open or locked, as a snapshot that stays
   * (`@ocs-seed`, replacing one an earlier move left) until `dropSeed` or the space's end.
   * `base` names it for `openImage(id, { since })`; its datasets are sent one by one
   * (`openSeedPart`), parents first, each a raw stream of its own: unlike a replication stream
   * (`-R`), such a stream can be resumed where a cut left it (`zfs receive -s`, `zfs send -t`).
   * While the seed stays, blocks the space frees are kept for it, within the space's quota.
   */
  async openSeed(id: string): Promise<SeedPlan> {
    assertId(id);
    const ds = this.ds(id);
    return this.mutex.run(id, async () => {
      await this.requireExists(id);
      await this.destroySnapshots(ds, SEED_SNAPSHOT);
      await this.run('zfs', ['snapshot', '-r', `${ds}@${SEED_SNAPSHOT}`]);
      const { stdout } = await this.run('zfs', ['list', '-H', '-r', '-t', 'filesystem', '-o', 'name', ds]);
      // zfs list -r names a parent before its children.
      const datasets = stdout
        .split('\n')
        .filter(Boolean)
        .map((n) => (n === ds ? '.' : n.slice(ds.length + 1)));
      return { base: (await this.seedOf(ds))!, datasets };
    });
  }

  /**
   * One dataset of the seed `base` as a raw stream (`zfs send -w`); with `token`, the rest of
   * it from where the receiving end's copy stopped (`zfs send -t`). The token is the other
   * node's word: it is read first (`zfs send -nv -t`) and must name this very snapshot, by name
   * and guid, and a raw send — a token without `rawok` would have an open space sent in the
   * clear, and one naming another dataset would send that.
   */
  async openSeedPart(id: string, o: { base: string; dataset: string; token?: string }): Promise<StorageImage> {
    assertId(id);
    if (!SEED_DATASET_RE.test(o.dataset))
      throw new OcsError('invalid_request', `${JSON.stringify(o.dataset)} is not a dataset of a space`);
    const ds = this.ds(id);
    const snapshot = `${o.dataset === '.' ? ds : `${ds}/${o.dataset}`}@${SEED_SNAPSHOT}`;
    const quota = await this.mutex.run(id, async () => {
      await this.requireExists(id);
      if ((await this.seedOf(ds)) !== o.base)
        throw new OcsError('conflict', "the space's seed is not the one named: take a new one");
      if (!(await this.exists(snapshot))) throw new OcsError('not_found', 'the seed holds no such dataset');
      if (o.token !== undefined) await this.checkResumeToken(o.token, snapshot);
      return Number((await this.props(ds, ['quota'])).quota);
    });
    const args = o.token === undefined ? ['send', '-w', snapshot] : ['send', '-t', o.token];
    return this.sendStream(args, quota, async () => undefined);
  }

  /** Refuses (`conflict`) a resume token that is not for a raw send of `snapshot`. */
  private async checkResumeToken(token: string, snapshot: string): Promise<void> {
    const refuse = (why: string) =>
      new OcsError('conflict', `the resume token is not for this seed (${why}): send the dataset whole`);
    if (!RESUME_TOKEN_RE.test(token)) throw refuse('not a token');
    let stdout: string;
    try {
      // -n: nothing is sent; -v prints the token's contents (to stdout with -n).
      ({ stdout } = await this.run('zfs', ['send', '-n', '-v', '-t', token]));
    } catch (e) {
      if (e instanceof CommandError) throw refuse(zfsWords(e));
      throw e;
    }
    const fields = new Map<string, string>();
    for (const line of stdout.split('\n')) {
      const m = /^\s+([a-z_]+) = (.*)$/.exec(line);
      if (m) fields.set(m[1]!, m[2]!.trim());
    }
    for (const k of fields.keys()) if (!RESUME_TOKEN_KEYS.has(k)) throw refuse(`it says ${k}`);
    if (fields.get('toname') !== snapshot) throw refuse('another dataset');
    if (fields.get('rawok') !== '1') throw refuse('not a raw send');
    const guid = (await this.props(snapshot, ['guid'])).guid;
    const told = fields.get('toguid') ?? '';
    if (!/^(0x[0-9a-f]{1,16}|[0-9]{1,20})$/.test(told) || guid === undefined || BigInt(told) !== BigInt(guid))
      throw refuse('another snapshot');
  }

  /** Forgets the space's seed (a move that ended, or chose to send whole). Idempotent. */
  async dropSeed(id: string): Promise<void> {
    assertId(id);
    await this.mutex.run(id, async () => {
      if (await this.exists(this.ds(id))) await this.destroySnapshots(this.ds(id), SEED_SNAPSHOT);
    });
  }

  /** Spaces that hold a seed (a move's, or one a crash left). */
  async listSeeds(): Promise<string[]> {
    if (!(await this.exists(this.parent))) return [];
    const { stdout } = await this.run('zfs', ['list', '-H', '-t', 'snapshot', '-d', '2', '-o', 'name', this.parent]);
    const ids = new Set<string>();
    for (const name of stdout.split('\n')) {
      const m = /^[^@]+\/([^/@]+)@(.+)$/.exec(name.trim());
      if (m && m[2] === SEED_SNAPSHOT && `${this.parent}/${m[1]}` === name.slice(0, name.indexOf('@'))) ids.add(m[1]!);
    }
    return [...ids];
  }

  /** The guid of the space's seed snapshot, or undefined. */
  private async seedOf(ds: string): Promise<string | undefined> {
    try {
      return (await this.props(`${ds}@${SEED_SNAPSHOT}`, ['guid'])).guid;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** `zfs <args>`'s output as an image bounded by `archiveImageBytes('zfs', quota)`, read in order. */
  private async sendStream(args: string[], quota: number, onClose: () => Promise<void>): Promise<StorageImage> {
    let send = readCommand('zfs', args);
    let position = 0;
    let closed = false;
    return {
      bytes: archiveImageBytes('zfs', quota),
      stream: true,
      read: async (into, at) => {
        if (at !== position) throw new Error(`a send stream is read in order: ${at} asked, ${position} next`);
        let n = await send.read(into);
        // A send stream always begins with a record, yet in the guest tier `zfs send` has been
        // seen (rarely, under TCG) to exit 0 having written nothing. Nothing is taken yet, so
        // the send is started again; an empty stream is never passed on as an image.
        for (let again = 0; n === 0 && position === 0 && again < 3; again++) {
          await send.close();
          send = readCommand('zfs', args);
          n = await send.read(into);
        }
        if (n === 0 && position === 0) throw new Error(`zfs ${args.join(' ')} wrote no stream`);
        position += n;
        return n;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await send.close();
        await onClose();
      },
    };
  }

  /**
   * Receives a raw replication stream as the new space `id`, into a container of its own under
   * <pool>/ocs-incoming whose quota bounds what the stream can write. The stream is untrusted:
   * `zfs receive` overrides the properties that reach the host (RECEIVED_PROPERTIES); `commit`
   * then checks that the datasets are a space's and nothing else (the layout in the module
   * comment, every one encrypted, no volume, device or clone), sets the keys' location, quota and
   * reservation itself, drops the stream's snapshots, and only then moves the space under
   * <pool>/ocs, locked. Nothing of it is mounted before (`-u`; and no key is loaded).
   *
   * With `onSeed`, the stream is an increment (`openImage(id, { since })` on the source) received
   * onto the seed `receiveSeed` holds for `id` (`-F`: what the source no longer has goes); the
   * container's quota still bounds seed and increment together.
   */
  async receiveImage(
    id: string,
    bytes: number,
    sizeBytes: number,
    o: { onSeed?: boolean } = {},
  ): Promise<ImageReceiver> {
    const r = await this.startReceive(id, bytes, sizeBytes, o.onSeed ? 'increment' : 'whole');
    const mp = this.mountpoint(id);
    return {
      write: r.write,
      commit: async () => {
        await r.end();
        await this.mutex.run(id, async () => {
          const tree = await this.checkReceived(r.received, r.refused);
          for (const root of tree.roots) await this.run('zfs', ['set', 'keylocation=prompt', root]);
          for (const snap of tree.snapshots) await this.destroySnapshots(r.received, snap);
          await this.run('zfs', ['set', `quota=${sizeBytes}`, `reservation=${sizeBytes}`, r.received]);
          if (!(await this.exists(this.parent)))
            await this.run('zfs', ['create', '-o', 'canmount=off', '-o', 'mountpoint=none', this.parent]);
          if (await this.exists(this.ds(id))) throw new OcsError('conflict', 'storage for this space already exists');
          mkdirSync(this.root, { recursive: true, mode: 0o711 });
          mkdirSync(join(this.root, 'mnt'), { recursive: true, mode: 0o711 });
          dirWithMode(mp, 0o000); // what a locked space shows
          await this.run('zfs', ['rename', r.received, this.ds(id)]);
          await this.run('zfs', ['destroy', '-r', r.container]);
        });
      },
      abort: r.abort,
      ...(o.onSeed ? { stop: r.stop } : {}),
    };
  }

  /**
   * Receives one dataset of a move's seed for the new space `id` (as `receiveImage`, into the
   * same container), and holds it there, unchecked, unmounted and locked, for the increment
   * that completes it (`receiveImage(id, …, { onSeed: true })`). Each is received resumable
   * (`-s`): `stop` keeps what arrived, and `seedState` gives the token its source goes on
   * from. `destroy(id)` drops it all.
   */
  async receiveSeed(
    id: string,
    bytes: number,
    sizeBytes: number,
    o: { dataset: string; resume?: boolean },
  ): Promise<SeedReceiver> {
    if (!SEED_DATASET_RE.test(o.dataset))
      throw new OcsError('archive_malformed', `${JSON.stringify(o.dataset)} is not a dataset of a space`);
    const r = await this.startReceive(id, bytes, sizeBytes, { dataset: o.dataset, resume: o.resume === true });
    return { write: r.write, hold: r.end, stop: r.stop, abort: r.abort };
  }

  async seedState(id: string): Promise<SeedState> {
    assertId(id);
    const received = `${this.incoming}/${id}/space`;
    return this.mutex.run(id, async () => {
      if (!(await this.exists(received))) return { held: [] };
      return this.seedStateOf(received);
    });
  }

  private async seedStateOf(received: string): Promise<SeedState> {
    const list = async (type: string, props: string) =>
      (await this.run('zfs', ['list', '-H', '-r', '-t', type, '-o', props, received])).stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t'));
    const rel = (name: string) => (name === received ? '.' : name.slice(received.length + 1));
    const seeds = new Set(
      (await list('snapshot', 'name')).map(([n = '']) => n).filter((n) => n.endsWith(`@${SEED_SNAPSHOT}`)),
    );
    const state: SeedState = { held: [] };
    for (const [name = '', token = '-'] of await list('filesystem', 'name,receive_resume_token')) {
      if (token !== '-') state.partial = { dataset: rel(name), token };
      else if (seeds.has(`${name}@${SEED_SNAPSHOT}`)) state.held.push(rel(name));
    }
    return state;
  }

  /**
   * A `zfs receive` into `<incoming>/<id>/space` (or, for a seed's dataset below the top, into
   * its place under it), fed in order, bounded by the container's quota.
   */
  private async startReceive(
    id: string,
    bytes: number,
    sizeBytes: number,
    what: 'whole' | 'increment' | { dataset: string; resume: boolean },
  ) {
    assertId(id);
    assertSize(sizeBytes, MIN_SPACE_BYTES);
    if (bytes !== archiveImageBytes('zfs', sizeBytes))
      throw new OcsError('archive_malformed', "the archive's stream bound does not match its storage size");
    const container = `${this.incoming}/${id}`;
    const received = `${container}/space`;
    const mp = this.mountpoint(id);
    const refused = (why: string) =>
      new OcsError('archive_filesystem_invalid', `the archive's ZFS stream is not a space's: ${why}`);
    const noSeed = () => new OcsError('conflict', 'no seed of this space is held here');
    const sink = await this.mutex.run(id, async () => {
      if (await this.exists(this.ds(id))) throw new OcsError('conflict', 'storage for this space already exists');
      if (what === 'increment') {
        if (!(await this.exists(received))) throw noSeed();
        if ((await this.seedStateOf(received)).partial)
          throw new OcsError('conflict', 'the seed held here is not whole yet');
        await this.backToSeed(received);
        return writeCommand('zfs', ['receive', '-u', '-F', ...RECEIVED_PROPERTIES(mp), received]);
      }
      if (typeof what === 'object' && (what.dataset !== '.' || what.resume)) {
        if (!(await this.exists(received))) throw noSeed();
        const { dataset, resume } = what;
        const target = dataset === '.' ? received : `${received}/${dataset}`;
        const state = await this.seedStateOf(received);
        if (resume) {
          if (state.partial?.dataset !== dataset)
            throw new OcsError('conflict', 'no part of this dataset is held to go on from');
        } else {
          const parent = dataset.includes('/') ? dataset.slice(0, dataset.lastIndexOf('/')) : '.';
          if (!state.held.includes(parent)) throw new OcsError('conflict', "the dataset's parent is not held whole");
          if (state.partial && state.partial.dataset !== dataset)
            throw new OcsError('conflict', 'another dataset of the seed is held in part');
          // Sent again from its start: what an earlier attempt left of it goes first.
          if (state.partial) await this.run('zfs', ['receive', '-A', target]);
          if (await this.exists(target)) await this.run('zfs', ['destroy', '-r', target]);
        }
        const props = dataset === '.' ? RECEIVED_PROPERTIES(mp) : RECEIVED_CHILD_PROPERTIES;
        return writeCommand('zfs', ['receive', '-s', '-u', ...props, target]);
      }
      if (await this.exists(container)) throw new OcsError('conflict', 'storage for this space already exists');
      if (!(await this.exists(this.incoming)))
        await this.run('zfs', ['create', '-o', 'canmount=off', '-o', 'mountpoint=none', this.incoming]);
      await this.run('zfs', [
        'create',
        ...['-o', 'canmount=off', '-o', 'mountpoint=none', '-o', `quota=${bytes}`],
        container,
      ]);
      // A seed's top: resumable like each of its datasets.
      const resumable = typeof what === 'object' ? ['-s'] : [];
      return writeCommand('zfs', ['receive', ...resumable, '-u', ...RECEIVED_PROPERTIES(mp), received]);
    });
    let position = 0;
    let writing: Promise<void> = Promise.resolve();
    return {
      container,
      received,
      refused,
      // Chunks arrive checked and in order, a few writes in flight: each waits for the one before.
      write: (data: Uint8Array, at: number): Promise<void> => {
        const w = writing.then(async () => {
          if (at !== position) throw new OcsError('archive_corrupt', `the send stream has a gap before ${at}`);
          if (at + data.length > bytes) throw new OcsError('archive_corrupt', 'the send stream is over its bound');
          position += data.length;
          await sink.write(data).catch((err: unknown) => {
            throw refused(zfsWords(err));
          });
        });
        writing = w.catch(() => undefined);
        return w;
      },
      /** The stream is whole: `zfs receive` took all of it. */
      end: async (): Promise<void> => {
        await writing;
        await sink.end().catch((err: unknown) => {
          // How much it was given says whether the stream ended early or zfs stopped reading it.
          throw refused(`${zfsWords(err)} (after ${position} bytes of the stream)`);
        });
      },
      /** The stream ends here: `zfs receive -s` keeps what it took, resumable. */
      stop: async (): Promise<void> => {
        await writing;
        await sink.end().catch(() => undefined);
      },
      abort: async (): Promise<void> => {
        await sink.kill();
        await this.mutex.run(id, async () => {
          if (await this.exists(container)) await this.run('zfs', ['destroy', '-r', container]);
        });
      },
    };
  }

  async renameVolume(id: string, from: string, to: string): Promise<void> {
    assertId(id);
    assertId(from, 'volumeId');
    assertId(to, 'volumeId');
    await this.mutex.run(id, async () => {
      await this.requireUnlocked(await this.requireExists(id));
      const [a, b] = [this.vol(id, from), this.vol(id, to)];
      if (!(await this.exists(a)) || (await this.exists(b))) return;
      // The new mountpoint first (a directory of the space's own dataset, mounted now), with
      // the mode a locked volume shows; then the dataset, whose mountpoint follows its name.
      const path = join(this.mountpoint(id), 'volumes', to);
      dirWithMode(path, 0o700);
      await this.closeTree(a);
      await this.run('zfs', ['rename', a, b]);
      removeEmptyDirs(join(this.mountpoint(id), 'volumes', from));
    });
  }

  // ---- internals ----

  /** Destroys `<ds>@<name>` and the same snapshot of every child; none there is fine. */
  private async destroySnapshots(ds: string, name: string): Promise<void> {
    try {
      await this.run('zfs', ['destroy', '-r', `${ds}@${name}`]);
    } catch (e) {
      if (!(e instanceof CommandError && /could not find any snapshots|does not exist/i.test(e.stderr))) throw e;
    }
  }

  /**
   * The held seed as it arrived: what an increment cut short brought (snapshots after the
   * seed's, datasets made since it) goes, so the increment sent again lands on the seed alone.
   */
  private async backToSeed(received: string): Promise<void> {
    const names = async (type: string) =>
      (await this.run('zfs', ['list', '-H', '-r', '-t', type, '-o', 'name', received])).stdout
        .split('\n')
        .filter(Boolean);
    const snapshots = await names('snapshot');
    if (snapshots.every((n) => n.endsWith(`@${SEED_SNAPSHOT}`))) return;
    const seeded = new Set(
      snapshots.filter((n) => n.endsWith(`@${SEED_SNAPSHOT}`)).map((n) => n.slice(0, n.indexOf('@'))),
    );
    // Parents first (zfs list -r): a dataset made since the seed goes with its children.
    for (const name of await names('filesystem')) {
      if (seeded.has(name)) await this.run('zfs', ['rollback', '-r', `${name}@${SEED_SNAPSHOT}`]);
      else if (await this.exists(name)) await this.run('zfs', ['destroy', '-r', name]);
    }
  }

  /**
   * The received tree must be a space's and nothing more: `<top>`, `data` and `volumes` under
   * the top's key, and each `volumes/<id>` its own encryption root, all filesystems, all
   * encrypted with raw keys; snapshots are allowed (and dropped). Returns the encryption roots
   * and the snapshot names.
   */
  private async checkReceived(
    top: string,
    refused: (why: string) => OcsError,
  ): Promise<{ roots: string[]; snapshots: string[] }> {
    const { stdout } = await this.run('zfs', [
      'list',
      '-H',
      '-p',
      '-r',
      '-t',
      'all',
      '-o',
      'name,type,encryption,keyformat,encryptionroot,origin',
      top,
    ]);
    const roots: string[] = [];
    const snapshots = new Set<string>();
    const seen = new Set<string>();
    for (const line of stdout.split('\n').filter(Boolean)) {
      const [name = '', type, encryption, keyformat, root, origin] = line.split('\t');
      if (type === 'snapshot') {
        snapshots.add(name.slice(name.indexOf('@') + 1));
        continue;
      }
      const rel = name === top ? '' : name.startsWith(`${top}/`) ? name.slice(top.length + 1) : undefined;
      if (type !== 'filesystem' || rel === undefined) throw refused(`it holds a ${type} (${rel ?? name})`);
      if (origin !== '-') throw refused(`${rel || 'its top'} is a clone`);
      const volume = /^volumes\/([^/]+)$/.exec(rel)?.[1];
      if (!['', 'data', 'volumes'].includes(rel) && !(volume && isId(volume))) throw refused(`it holds ${rel}`);
      if (encryption === 'off' || keyformat !== 'raw')
        throw refused(`${rel || 'its top'} is not encrypted with a raw key`);
      const ownRoot = rel === '' || volume !== undefined;
      if (root !== (ownRoot ? name : top)) throw refused(`${rel || 'its top'} is under another key than a space's`);
      if (ownRoot) roots.push(name);
      seen.add(rel);
    }
    for (const need of ['', 'data', 'volumes']) if (!seen.has(need)) throw refused(`it has no ${need || 'top'}`);
    return { roots, snapshots: [...snapshots] };
  }

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

function isId(s: string): boolean {
  try {
    assertId(s);
    return true;
  } catch {
    return false;
  }
}

/** What `zfs` said, for a refusal: its first lines, no argv (a stream's words, not ours). */
function zfsWords(err: unknown): string {
  const words = err instanceof CommandError ? err.stderr : err instanceof Error ? err.message : String(err);
  return words.split('\n').slice(0, 3).join(' ').slice(0, 300) || 'zfs receive failed';
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
