/**
 * The container kind, with the images it runs: each space has its own engine (podman), whose
 * store lies in the space's storage and whose containers land in the space's cgroup. The owner's
 * request (command, environment, mounts) is recorded in the space, not in the daemon's database.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ContainerDriver } from '@ocs/host';
import { OcsError, isOcsError, type BrokerArgs, type BrokerResult, type Container } from '@ocs/protocol';
import type { RemapFrom, SpaceRow, WorkloadRow } from '../state/index.js';
import { newId } from '../ids.js';
import { spaceCgroupLayout, spaceDataLayout } from '../spaces/layout.js';
import { budgetOf, type WorkloadContext } from './context.js';
import type { HandlersOf, OperationModule, Orphans, SpacesView, StorageState, WorkloadKind } from './kind.js';
import { readRecord, removeRecord, renameRecord, writeRecord } from './records.js';
import { chownRoot, openUploaded } from './uploaded.js';

const DEFAULT_CONTAINER_PIDS = 256;

export class Containers implements WorkloadKind<'container'>, OperationModule<'container' | 'image'> {
  readonly kind = 'container';
  readonly kinds = ['container', 'image'] as const;
  readonly handlers: HandlersOf<'container' | 'image'>;

  constructor(private readonly c: WorkloadContext) {
    const engine = (s: SpaceRow) => c.containerDriver(s);
    this.handlers = {
      loadImage: (s, a) => this.loadImage(s, a.image, a.file),
      listImages: async (s) => ({
        images: (await (await engine(s)).listImages(s.id)).map((i) => ({
          name: i.name,
          tag: 'latest',
          dockerId: i.dockerId,
          sizeBytes: i.sizeBytes,
          loadedAt: new Date(i.created).toISOString(),
        })),
      }),
      deleteImage: async (s, a) => {
        await (await engine(s)).removeImage(s.id, a.image);
        return {};
      },
      createContainer: (s, a) => this.create(s, a),
      listContainers: async (s) => ({ containers: await this.listViews(s) }),
      getContainer: (s, a) => this.operate(s, a.container, (w) => this.view(s, w)),
      startContainer: (s, a) =>
        this.operate(s, a.container, async (w) => {
          await (await engine(s)).start(s.id, w.id);
          return this.view(s, w);
        }),
      stopContainer: (s, a) =>
        this.operate(s, a.container, async (w) => {
          await (await engine(s)).stop(s.id, w.id);
          return this.view(s, w);
        }),
      deleteContainer: (s, a) => this.remove(s, a.container),
      containerLogs: (s, a) =>
        this.operate(s, a.container, async (w) => (await engine(s)).logs(s.id, w.id, { tailLines: a.tail })),
      containerStats: (s, a) => this.operate(s, a.container, async (w) => (await engine(s)).stats(s.id, w.id)),
    };
  }

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

  async create(s: SpaceRow, a: BrokerArgs<'createContainer'>): Promise<Container> {
    const docker = await this.c.containerDriver(s);
    const budget = budgetOf(s);
    const mounts = this.mountsOf(s, a);
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
    const undo = this.c.revert(s.id, id);
    try {
      undo.push('remove record', () => removeRecord(records, id));
      await writeRecord(records, id, { ...a, pids });
      // Before the create: one that fails half-way may leave a container behind (or none: not_found).
      undo.push('remove container', () => this.removeFrom(docker, s.id, id));
      await this.createInEngine(s, docker, id, { ...a, pids }, mounts, row.address);
      if (a.start !== false) await docker.start(s.id, id);
      this.c.d.workloads.markReady(id);
      return await this.view(s, { ...row, state: 'ready' });
    } catch (err) {
      await undo.run();
      this.c.d.workloads.remove(id);
      throw err;
    }
  }

  /** Mounts name the space's own volumes; the host path comes from the storage driver, never the caller. */
  private mountsOf(s: SpaceRow, a: Pick<BrokerArgs<'createContainer'>, 'mounts'>) {
    const mounts = [];
    for (const m of a.mounts ?? []) {
      const v = this.c.d.workloads.get(s.id, 'volume', m.volume);
      const path = (v.spec as { path?: string }).path;
      if (v.state !== 'ready' || !path)
        throw new OcsError('conflict', `volume ${m.volume} is not ready`, { volume: m.volume });
      mounts.push({ source: path, target: m.target, readOnly: m.readOnly === true });
    }
    return mounts;
  }

  /** The container in the space's engine, as its record says (not started). */
  private async createInEngine(
    s: SpaceRow,
    docker: ContainerDriver,
    id: string,
    a: BrokerArgs<'createContainer'> & { pids: number },
    mounts: ReturnType<Containers['mountsOf']>,
    address: string | null,
  ): Promise<void> {
    // The container's root is the space's first subordinate uid, not the host's root: the
    // volume's top directory is given to it (what is inside stays as the container made it).
    const root = this.c.workloadIds(s).idMap.base;
    for (const m of mounts) await chownRoot(m.source, root);
    await docker.create({
      spaceId: s.id,
      containerId: id,
      name: a.name,
      image: a.image,
      ...(a.command ? { command: a.command } : {}),
      ...(a.env ? { env: a.env } : {}),
      cpuMillicores: a.cpuMillicores,
      memoryBytes: a.memoryBytes,
      pids: a.pids,
      cgroupParent: this.c.d.cgroups.absolutePath(spaceCgroupLayout(this.c.d.cgroupParent, s.id).containers),
      mounts,
      capAdd: a.capAdd ?? [],
      ...(a.readOnlyRootfs !== undefined ? { readOnlyRootfs: a.readOnlyRootfs } : {}),
      ...(address !== null ? { address } : {}),
      ...(this.c.d.dns && this.c.d.dns.length > 0 ? { dns: this.c.d.dns } : {}),
    });
  }

  /**
   * A restored space's containers, made this node's: the store it brought is adopted (podman's
   * database dropped, the images renamed, each old container taken apart into its writable
   * layer and log), and each container is made anew from its record, under its new id, with
   * this space's ids, volumes and an address of this node's network, then given back its layer
   * and log. None is started here: unlock's restore starts what ran at lock.
   */
  async remap(s: SpaceRow, mountpoint: string, from: RemapFrom): Promise<void> {
    const mine = this.c.d.workloads.list(s.id, 'container');
    const engines = this.c.d.containers;
    if (mine.length === 0) return;
    if (!engines) throw new OcsError('unavailable', 'this node runs no containers');
    const oldOf = new Map(Object.entries(from.workloadIds).map(([old, id]) => [id, old]));
    const space = this.c.engineSpace(s, mountpoint);
    await engines.adoptStore(
      space,
      { spaceId: from.spaceId, arrival: from.arrival ?? from.spaceId },
      mine.map((w) => oldOf.get(w.id)).filter((x) => x !== undefined),
    );
    const docker = await this.c.containerDriver(s);
    const { records } = await this.c.data(s);
    const addresses = this.c.d.networks?.addresses(this.c.workloadIds(s).subnet, 'container');
    for (const w of mine) {
      const old = oldOf.get(w.id);
      if (old === undefined) continue;
      await renameRecord(records, old, w.id);
      const a = await readRecord<BrokerArgs<'createContainer'> & { pids: number }>(records, w.id);
      if (!a) {
        this.c.d.logger.warn({ spaceId: s.id, id: w.id }, 'restored container has no record; it is not made again');
        continue;
      }
      if (!(await this.c.exists(() => docker.inspect(s.id, w.id)))) {
        const address = addresses ? this.c.d.workloads.assignAddress(w.id, addresses) : null;
        await this.createInEngine(s, docker, w.id, a, this.mountsOf(s, a), address);
      }
      await engines.transplant(space, old, w.id);
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
        this.view(s, w).catch((err: unknown) => {
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

  async view(s: SpaceRow, w: WorkloadRow): Promise<Container> {
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

  /**
   * Marked first: a daemon killed from here on finishes the removal at its next start.
   * Idempotent against a container already gone (a crash after the engine removed it, before the
   * record went): the owner's retry removes the record instead of a 404 forever.
   */
  async remove(s: SpaceRow, name: string): Promise<Record<string, never>> {
    const w = this.c.d.workloads.get(s.id, 'container', name);
    this.c.d.workloads.markRemoving(w.id);
    await this.removeFrom(await this.c.containerDriver(s), s.id, w.id);
    await removeRecord((await this.c.data(s)).records, w.id);
    this.c.d.workloads.remove(w.id);
    // What it published went with its record: the space's rules follow.
    await this.c.d.networks?.update(s.id);
    return {};
  }

  /** Removes the container from the engine; one already gone is what was wanted. */
  private removeFrom(engine: ContainerDriver, spaceId: string, id: string): Promise<void> {
    return engine.remove(spaceId, id).catch((err: unknown) => this.c.ignoreGone(err));
  }

  /**
   * Stops the space's engine with its containers; with the storage not unlocked (or no engine
   * on the node) everything of the engine is killed, as nothing of it can be kept.
   */
  async stopForLock(s: SpaceRow, storage: StorageState | undefined): Promise<string[]> {
    const engines = this.c.d.containers;
    if (!engines || !storage?.unlocked) {
      await engines?.remove(this.c.engineGroups(s.id));
      return [];
    }
    return engines.stop(this.c.engineSpace(s, storage.mountpoint));
  }

  /** Starts the containers again from the space's engine, whose store survived in the space. */
  async restore(s: SpaceRow, mountpoint: string, running: readonly string[]): Promise<void> {
    if (!this.c.d.containers || running.length === 0) return;
    const engine = await this.c.d.containers.driver(this.c.engineSpace(s, mountpoint));
    for (const id of running)
      await engine
        .start(s.id, id)
        .catch((err: unknown) => this.c.d.logger.warn({ err, spaceId: s.id, id }, 'container not restored'));
  }

  /** Kills everything of the space's engine; its store goes with the space's storage. */
  async removeAll(spaceId: string): Promise<void> {
    await this.c.d.containers?.remove(this.c.engineGroups(spaceId));
  }

  /** Only an active space's engine can be asked; otherwise the record waits for a later start. */
  async undo(w: WorkloadRow, active: SpaceRow | undefined): Promise<boolean> {
    if (!active) return false;
    await this.removeFrom(await this.c.containerDriver(active), w.spaceId, w.id);
    await removeRecord((await this.c.data(active)).records, w.id);
    return true;
  }

  /** An engine left running for a space that is not active is stopped (a gone space's removed). */
  async stopInactive(view: Omit<SpacesView, 'known'>): Promise<string[]> {
    const gone: string[] = [];
    const engines = this.c.d.containers;
    for (const spaceId of engines ? await engines.spacesWithRunDirs() : []) {
      if (!view.ours.has(spaceId) || view.active.has(spaceId)) continue;
      await engines!.remove(this.c.engineGroups(spaceId));
      if (!view.live.has(spaceId)) gone.push(spaceId);
    }
    return gone;
  }

  /** Each active space's engine, if it has a store, lists what it holds; what no record explains goes. */
  async removeOrphans(view: SpacesView): Promise<Orphans> {
    const orphans: Orphans = { workloads: [], spaces: [] };
    const engines = this.c.d.containers;
    if (!engines) return orphans;
    for (const [spaceId, space] of view.active) {
      const info = await this.c.d.storage.info(spaceId).catch(() => undefined);
      if (!info?.unlocked || !existsSync(join(spaceDataLayout(info.mountpoint).engine, 'storage'))) continue;
      try {
        const engine = await engines.driver(this.c.engineSpace(space, info.mountpoint));
        for (const c of await engine.list(spaceId)) {
          if (view.known.has(c.containerId)) continue;
          await this.removeFrom(engine, spaceId, c.containerId);
          orphans.workloads.push(c.containerId);
        }
      } catch (err) {
        // One space's engine that does not start must not keep the node from starting; the
        // space's next request starts it again (and its owner sees the refusal).
        this.c.d.logger.error({ err, spaceId }, "could not list the space's containers at start");
      }
    }
    return orphans;
  }
}

function removed(name: string): OcsError {
  return new OcsError('not_found', 'no such container in this space (it is being removed)', { container: name });
}
