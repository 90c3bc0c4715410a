/**
 * The volume kind: each volume its own encryption root inside the space, with a key of its own
 * kept (encrypted by the space key) in the space's `node/keys/`. A volume has no process: lock
 * closes it with the space's storage, unlock opens it with the keys found inside.
 */
import { OcsError, isOcsError, type BrokerArgs, type Volume } from '@ocs/protocol';
import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { receivesImages } from '@ocs/host';
import type { RemapFrom, SpaceRow, WorkloadRow } from '../state/index.js';
import { newId } from '../ids.js';
import { spaceDataLayout } from '../spaces/layout.js';
import { budgetOf, type WorkloadContext } from './context.js';
import type { HandlersOf, OperationModule, Orphans, WorkloadKind } from './kind.js';
import { readRecord } from './records.js';
import { newVolumeKey, readVolumeKey, shredVolumeKey, storeVolumeKey } from './volume-keys.js';

export class Volumes implements WorkloadKind<'volume'>, OperationModule<'volume'> {
  readonly kind = 'volume';
  readonly kinds = ['volume'] as const;
  readonly handlers: HandlersOf<'volume'>;

  constructor(private readonly c: WorkloadContext) {
    this.handlers = {
      createVolume: (s, a) => this.create(s, a),
      listVolumes: async (s) => ({ volumes: c.d.workloads.list(s.id, 'volume').map((w) => this.view(s, w)) }),
      deleteVolume: (s, a) => this.remove(s, a.volume),
    };
  }

  async create(s: SpaceRow, a: BrokerArgs<'createVolume'>): Promise<Volume> {
    const id = newId('vol');
    const row = this.c.d.workloads.reserve(budgetOf(s), {
      id,
      spaceId: s.id,
      kind: 'volume',
      name: a.name,
      spec: { sizeBytes: a.sizeBytes },
      cpuMillicores: 0,
      memoryBytes: 0,
      storageBytes: a.sizeBytes,
      pids: 0,
    });
    const key = newVolumeKey();
    const undo = this.c.revert(s.id, id);
    // Registered first, so run last: the key outlives its volume.
    undo.push('shred key', async () => shredVolumeKey((await this.c.data(s)).keys, id));
    undo.push('destroy volume', () => this.c.d.storage.destroyVolume(s.id, id));
    try {
      const { keys } = await this.c.data(s);
      // Key first: a crash after this leaves a key without a volume (shredded by cleanup), never
      // a volume whose key is lost.
      await storeVolumeKey(keys, id, key);
      const { path } = await this.c.d.storage.createVolume(s.id, id, a.sizeBytes, key);
      this.c.d.workloads.markReady(id, { sizeBytes: a.sizeBytes, path });
      return this.view(s, { ...row, state: 'ready' });
    } catch (err) {
      await undo.run();
      this.c.d.workloads.remove(id);
      throw err;
    } finally {
      key.fill(0);
    }
  }

  async remove(s: SpaceRow, nameOrId: string): Promise<Record<string, never>> {
    const w = this.c.d.workloads.get(s.id, 'volume', nameOrId);
    const { records } = await this.c.data(s);
    const users: WorkloadRow[] = [];
    for (const c of this.c.d.workloads.list(s.id, 'container')) {
      type Mounts = { mounts?: { volume: string }[] };
      const r = (await readRecord<Mounts>(records, c.id)) ?? (c.spec as Mounts);
      if (r?.mounts?.some((m) => m.volume === w.name || m.volume === w.id)) users.push(c);
    }
    if (users.length > 0)
      throw new OcsError('conflict', 'containers mount this volume; delete them first', {
        containers: users.map((c) => c.name),
      });
    await this.destroy(s.id, w.id, (await this.c.data(s)).keys);
    this.c.d.workloads.remove(w.id);
    return {};
  }

  /** The volume, then its key: a crash between leaves a key without a volume, never the reverse. */
  private async destroy(spaceId: string, id: string, keys: string): Promise<void> {
    await this.c.d.storage.destroyVolume(spaceId, id);
    await shredVolumeKey(keys, id);
  }

  view(s: SpaceRow, w: WorkloadRow): Volume {
    return {
      id: w.id,
      name: w.name,
      sizeBytes: w.storageBytes,
      createdAt: new Date(w.createdAt).toISOString(),
      unlocked: s.state === 'active' && w.state === 'ready',
    };
  }

  /** Loads every volume key of a space that was just unlocked: one unlock opens them all. */
  async open(s: SpaceRow, mountpoint: string): Promise<void> {
    const spaceId = s.id;
    const keys = spaceDataLayout(mountpoint).keys;
    for (const w of this.c.d.workloads.list(spaceId, 'volume')) {
      const key = await readVolumeKey(keys, w.id);
      if (!key) {
        this.c.d.logger.warn({ spaceId, volumeId: w.id }, 'volume has no key; it stays locked');
        continue;
      }
      try {
        // Already open (`conflict`): a restored space's first unlock opens them before its
        // files' owners are mapped, and a crash may have come after.
        await this.c.d.storage.unlockVolume(spaceId, w.id, key).catch((err: unknown) => {
          if (!(isOcsError(err) && (err.code === 'space_unlocked' || err.code === 'conflict'))) throw err;
        });
      } finally {
        key.fill(0);
      }
    }
  }

  /** A restored space's volumes under their new ids: the storage's directories (or datasets) and the volume keys. */
  async rename(s: SpaceRow, mountpoint: string, from: RemapFrom): Promise<void> {
    const storage = this.c.d.storage;
    if (!receivesImages(storage)) throw new OcsError('unavailable', 'this node cannot open a restored space');
    const keys = spaceDataLayout(mountpoint).keys;
    for (const [old, id] of Object.entries(from.workloadIds)) {
      if (!old.startsWith('vol_')) continue;
      await storage.renameVolume(s.id, old, id);
      const [a, b] = [join(keys, `${old}.key`), join(keys, `${id}.key`)];
      if (existsSync(a) && !existsSync(b)) await rename(a, b);
    }
  }

  /** Volumes close with the space's storage: nothing runs, nothing to start again. */
  async stopForLock(): Promise<string[]> {
    return [];
  }

  async restore(): Promise<void> {}

  /** Volumes live inside the space's storage and are destroyed with it. */
  async removeAll(): Promise<void> {}

  /** Only while the space is unlocked can a half-made volume and its key be removed. */
  async undo(w: WorkloadRow): Promise<boolean> {
    const info = await this.c.d.storage.info(w.spaceId).catch(() => undefined);
    if (!info?.unlocked) return false;
    await this.destroy(w.spaceId, w.id, spaceDataLayout(info.mountpoint).keys);
    return true;
  }

  /** A volume no record explains lies inside its space's encrypted storage, destroyed with it. */
  async removeOrphans(): Promise<Orphans> {
    return { workloads: [], spaces: [] };
  }
}
