/**
 * A space's images and containers, in the space's own engine. The owner's request (command,
 * environment, mounts) is recorded in the space, not in the daemon's database.
 */
import { join } from 'node:path';
import { Revert } from '@ocs/host';
import { OcsError, isOcsError, type BrokerArgs, type BrokerResult, type Container } from '@ocs/protocol';
import type { SpaceRow, WorkloadRow } from '../state/index.js';
import { newId } from '../ids.js';
import { spaceCgroupLayout } from '../spaces/layout.js';
import { budgetOf, type BrokerContext } from './context.js';
import { readRecord, removeRecord, writeRecord } from './records.js';
import { chownRoot, openUploaded } from './uploaded.js';

const DEFAULT_CONTAINER_PIDS = 256;

export class ContainerOps {
  constructor(private readonly c: BrokerContext) {}

  async loadImage(s: SpaceRow, image: string, file: string): Promise<BrokerResult<'loadImage'>> {
    const data = await this.c.data(s);
    const path = join(data.files, file);
    const fh = await openUploaded(path);
    try {
      const size = (await fh.stat()).size;
      const left = s.storageBytes - this.c.d.workloads.used(s.id).storageBytes;
      const { dockerId, sizeBytes } = await (
        await this.c.containerDriver(s)
      ).loadImage(s.id, image, fh.createReadStream(), {
        tmpDir: data.spool,
        maxBytes: Math.max(0, Math.min(left, size)),
      });
      return {
        name: image,
        tag: 'latest',
        dockerId,
        sizeBytes,
        loadedAt: new Date(this.c.d.clock.now()).toISOString(),
      };
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async createContainer(s: SpaceRow, a: BrokerArgs<'createContainer'>): Promise<Container> {
    const docker = await this.c.containerDriver(s);
    const budget = budgetOf(s);
    // Mounts name the space's own volumes; the host path comes from the storage driver, never the caller.
    const mounts = [];
    for (const m of a.mounts ?? []) {
      const v = this.c.d.workloads.get(s.id, 'volume', m.volume);
      const path = (v.spec as { path?: string }).path;
      if (v.state !== 'ready' || !path)
        throw new OcsError('conflict', `volume ${m.volume} is not ready`, { volume: m.volume });
      mounts.push({ source: path, target: m.target, readOnly: m.readOnly === true });
    }
    // The container's root is the space's first subordinate uid, not the host's root: the
    // volume's top directory is given to it (what is inside stays as the container made it).
    const root = this.c.workloadIds(s).idMap.base;
    for (const m of mounts) await chownRoot(m.source, root);
    const left = budget.pids === undefined ? undefined : budget.pids - this.c.d.workloads.used(s.id).pids;
    const pids = a.pids ?? Math.min(this.c.d.defaultContainerPids ?? DEFAULT_CONTAINER_PIDS, left ?? Infinity);
    const id = newId('ctr');
    const { subnet } = this.c.workloadIds(s);
    const addresses = this.c.d.networks?.addresses(subnet, 'container');
    const row = this.c.d.workloads.reserve(
      budget,
      {
        id,
        spaceId: s.id,
        kind: 'container',
        name: a.name,
        // The request (command, environment) is the owner's: it goes into the space, not here.
        spec: {},
        cpuMillicores: a.cpuMillicores,
        memoryBytes: a.memoryBytes,
        storageBytes: 0,
        pids: Math.max(pids, 1),
      },
      addresses ? { addresses } : {},
    );
    const { records } = await this.c.data(s);
    const undo = new Revert((err, step) => this.c.d.logger.warn({ err, spaceId: s.id, id, step }, 'undo failed'));
    try {
      undo.push('remove record', () => removeRecord(records, id));
      await writeRecord(records, id, { ...a, pids });
      // Before the create: one that fails half-way may leave a container behind (or none: not_found).
      undo.push('remove container', () => docker.remove(s.id, id).catch((err: unknown) => this.c.ignoreGone(err)));
      await docker.create({
        spaceId: s.id,
        containerId: id,
        name: a.name,
        image: a.image,
        ...(a.command ? { command: a.command } : {}),
        ...(a.env ? { env: a.env } : {}),
        cpuMillicores: a.cpuMillicores,
        memoryBytes: a.memoryBytes,
        pids,
        cgroupParent: this.c.d.cgroups.absolutePath(spaceCgroupLayout(this.c.d.cgroupParent, s.id).containers),
        mounts,
        capAdd: a.capAdd ?? [],
        ...(a.readOnlyRootfs !== undefined ? { readOnlyRootfs: a.readOnlyRootfs } : {}),
        ...(row.address !== null ? { address: row.address } : {}),
        ...(this.c.d.dns && this.c.d.dns.length > 0 ? { dns: this.c.d.dns } : {}),
      });
      if (a.start !== false) await docker.start(s.id, id);
      this.c.d.workloads.markReady(id);
      return await this.containerView(s, { ...row, state: 'ready' });
    } catch (err) {
      await undo.run();
      this.c.d.workloads.remove(id);
      throw err;
    }
  }

  /**
   * The container's record, for an operation on it: one being removed is `not_found` already.
   * Then `engine` runs; if it fails because a delete took the container meanwhile (its record is
   * gone or being removed), that is `not_found` too, not the engine's `host_failed`.
   */
  async operate<T>(s: SpaceRow, name: string, engine: (w: WorkloadRow) => Promise<T>): Promise<T> {
    const w = this.c.d.workloads.get(s.id, 'container', name);
    if (w.removingSince !== null) throw removed(name);
    try {
      return await engine(w);
    } catch (err) {
      if (this.goneMeanwhile(s, w)) throw removed(name);
      throw err;
    }
  }

  /** Every container of the space that is not being removed; one a delete takes mid-list is left out. */
  async listViews(s: SpaceRow): Promise<Container[]> {
    const live = this.c.d.workloads.list(s.id, 'container').filter((w) => w.removingSince === null);
    const views = await Promise.all(
      live.map((w) =>
        this.containerView(s, w).catch((err: unknown) => {
          if (this.goneMeanwhile(s, w)) return undefined;
          throw err;
        }),
      ),
    );
    return views.filter((v) => v !== undefined);
  }

  private goneMeanwhile(s: SpaceRow, w: WorkloadRow): boolean {
    const now = this.c.d.workloads.find(s.id, 'container', w.id);
    return now === undefined || now.removingSince !== null;
  }

  async containerView(s: SpaceRow, w: WorkloadRow): Promise<Container> {
    const st = await (await this.c.containerDriver(s)).inspect(s.id, w.id).catch((err: unknown) => {
      if (isOcsError(err) && err.code === 'not_found') return undefined;
      throw err;
    });
    const spec =
      (await readRecord<{ image: string }>((await this.c.data(s)).records, w.id)) ?? (w.spec as { image: string });
    return {
      id: w.id,
      name: w.name,
      image: spec.image ?? '',
      state: (st?.state ?? 'dead') as Container['state'],
      ...(st?.exitCode !== undefined ? { exitCode: st.exitCode } : {}),
      ...(st ? { oomKilled: st.oomKilled } : {}),
      cpuMillicores: w.cpuMillicores,
      memoryBytes: w.memoryBytes,
      pids: w.pids,
      createdAt: new Date(w.createdAt).toISOString(),
    };
  }
}

function removed(name: string): OcsError {
  return new OcsError('not_found', 'no such container in this space (it is being removed)', { container: name });
}
