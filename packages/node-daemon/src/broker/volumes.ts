/**
 * A space's volumes: each its own encryption root inside the space, with a key of its own kept
 * (encrypted by the space key) in the space's `node/keys/`.
 */
import { Revert } from '@ocs/host';
import { OcsError, isOcsError, type BrokerArgs, type Volume } from '@ocs/protocol';
import type { SpaceRow, WorkloadRow } from '../state/index.js';
import { newId } from '../ids.js';
import { spaceDataLayout } from '../spaces/layout.js';
import { budgetOf, type BrokerContext } from './context.js';
import { readRecord } from './records.js';
import { newVolumeKey, readVolumeKey, shredVolumeKey, storeVolumeKey } from './volume-keys.js';

export class VolumeOps {
  constructor(private readonly c: BrokerContext) {}

  async createVolume(s: SpaceRow, a: BrokerArgs<'createVolume'>): Promise<Volume> {
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
    const undo = new Revert((err, step) => this.c.d.logger.warn({ err, spaceId: s.id, id, step }, 'undo failed'));
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
      return this.volumeView(s, { ...row, state: 'ready' });
    } catch (err) {
      await undo.run();
      this.c.d.workloads.remove(id);
      throw err;
    } finally {
      key.fill(0);
    }
  }

  async deleteVolume(s: SpaceRow, nameOrId: string): Promise<Record<string, never>> {
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
    await this.c.d.storage.destroyVolume(s.id, w.id);
    await shredVolumeKey((await this.c.data(s)).keys, w.id);
    this.c.d.workloads.remove(w.id);
    return {};
  }

  volumeView(s: SpaceRow, w: WorkloadRow): Volume {
    return {
      id: w.id,
      name: w.name,
      sizeBytes: w.storageBytes,
      createdAt: new Date(w.createdAt).toISOString(),
      unlocked: s.state === 'active' && w.state === 'ready',
    };
  }

  /** Loads every volume key of a space that was just unlocked: one unlock opens them all. */
  async unlockVolumes(spaceId: string, mountpoint: string): Promise<void> {
    const keys = spaceDataLayout(mountpoint).keys;
    for (const w of this.c.d.workloads.list(spaceId, 'volume')) {
      const key = await readVolumeKey(keys, w.id);
      if (!key) {
        this.c.d.logger.warn({ spaceId, volumeId: w.id }, 'volume has no key; it stays locked');
        continue;
      }
      try {
        await this.c.d.storage.unlockVolume(spaceId, w.id, key).catch((err: unknown) => {
          if (!(isOcsError(err) && err.code === 'space_unlocked')) throw err;
        });
      } finally {
        key.fill(0);
      }
    }
  }
}
