/**
 * The privileged broker: the only code that turns a space's wishes into host objects. It is
 * called with the space id its socket belongs to, never one the caller names, and re-checks
 * everything itself: the arguments against the schemas, the space's state, its remaining budget
 * (summed in one transaction), that every path lies in the space's own storage, and that every
 * container and VM lands in the space's cgroup. The drivers add the hardening on top.
 */
import { constants } from 'node:fs';
import { mkdir, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  openExactFile,
  type CgroupDriver,
  type DockerDriver,
  type StorageDriver,
  type VmDriver,
  type VmSpec,
} from '@ocs/host';
import {
  BROKER_OPS,
  OcsError,
  isBrokerOp,
  isOcsError,
  validate,
  type BrokerArgs,
  type BrokerOp,
  type BrokerResult,
  type Container,
  type IssuerKeySets,
  type Vm,
  type Volume,
} from '@ocs/protocol';
import type { AuditLog, Budget, SpaceRow, SpacesRepo, WorkloadRow, WorkloadsRepo } from '../state/index.js';
import type { RefusalLog } from '../state/refusals.js';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import { newId } from '../ids.js';
import { spaceCgroupLayout, spaceDataLayout } from '../spaces/layout.js';
import { newVolumeKey, readVolumeKey, shredVolumeKey, storeVolumeKey } from './volume-keys.js';

export interface BrokerDeps {
  spaces: SpacesRepo;
  workloads: WorkloadsRepo;
  audit: AuditLog;
  /** Refusals: counted, and chained under the space within its budget. */
  refusals: RefusalLog;
  storage: StorageDriver;
  cgroups: CgroupDriver;
  /** Absent: the node runs no containers (`unavailable`). */
  docker?: DockerDriver | undefined;
  /** Absent: the node runs no VMs (`unavailable`). */
  vms?: VmDriver | undefined;
  cgroupParent: string;
  logger: Logger;
  clock: Clock;
  /**
   * The uid QEMU runs as for a space whose API process has `spaceUid`: a second uid of the
   * space's own, so a guest that escaped QEMU cannot reach the broker socket (which answers
   * the API process's uid), nor another space's VMs.
   */
  workloadUid(spaceUid: number): number;
  /** A container that names no pids limit gets this many (bounded by what the space has left). */
  defaultContainerPids?: number;
  /** The remote issuers' keys as the daemon holds them now (the space process has no network). */
  issuerKeys(): IssuerKeySets;
}

/** Operations that change nothing: audited only when refused. Every operation needs an active space. */
const READ_ONLY = new Set<BrokerOp>([
  'status',
  'listVolumes',
  'listImages',
  'listContainers',
  'getContainer',
  'containerLogs',
  'containerStats',
  'listVms',
  'getVm',
  'vmConsole',
  'issuerKeys',
]);

const DEFAULT_CONTAINER_PIDS = 256;
/** QEMU's own threads and memory beyond the guest's are charged to the space's cgroup, not here. */
const VM_CPU_PER_VCPU = 1000;

type Handler<O extends BrokerOp> = (space: SpaceRow, args: BrokerArgs<O>) => Promise<BrokerResult<O>>;

export class Broker {
  private readonly handlers: { [O in BrokerOp]: Handler<O> };

  constructor(private readonly d: BrokerDeps) {
    this.handlers = {
      status: async (s) => {
        const used = d.workloads.used(s.id);
        const counts = d.workloads.counts(s.id);
        return {
          spaceId: s.id,
          resources: budgetOf(s) as BrokerResult<'status'>['resources'],
          used,
          volumes: counts.volume,
          containers: counts.container,
          vms: counts.vm,
        };
      },
      createVolume: (s, a) => this.createVolume(s, a),
      listVolumes: async (s) => ({ volumes: d.workloads.list(s.id, 'volume').map((w) => this.volumeView(s, w)) }),
      deleteVolume: (s, a) => this.deleteVolume(s, a.volume),
      loadImage: (s, a) => this.loadImage(s, a.image, a.file),
      listImages: async (s) => ({
        images: (await this.docker().listImages(s.id)).map((i) => ({
          name: i.name,
          tag: 'latest',
          dockerId: i.dockerId,
          sizeBytes: i.sizeBytes,
          loadedAt: new Date(i.created).toISOString(),
        })),
      }),
      deleteImage: async (s, a) => {
        await this.docker().removeImage(s.id, a.image);
        return {};
      },
      createContainer: (s, a) => this.createContainer(s, a),
      listContainers: async (s) => ({
        containers: await Promise.all(d.workloads.list(s.id, 'container').map((w) => this.containerView(s, w))),
      }),
      getContainer: (s, a) => this.containerView(s, d.workloads.get(s.id, 'container', a.container)),
      startContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        await this.docker().start(s.id, w.id);
        return this.containerView(s, w);
      },
      stopContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        await this.docker().stop(s.id, w.id);
        return this.containerView(s, w);
      },
      deleteContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        // Idempotent against a container already gone (a crash after the engine removed it,
        // before the record went): the owner's retry removes the record instead of a 404 forever.
        await this.docker()
          .remove(s.id, w.id)
          .catch((err: unknown) => this.ignoreGone(err));
        d.workloads.remove(w.id);
        return {};
      },
      containerLogs: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        return this.docker().logs(s.id, w.id, { tailLines: a.tail });
      },
      containerStats: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        return this.docker().stats(s.id, w.id);
      },
      createVm: (s, a) => this.createVm(s, a),
      listVms: async (s) => ({
        vms: await Promise.all(d.workloads.list(s.id, 'vm').map((w) => this.vmView(s, w))),
      }),
      getVm: (s, a) => this.vmView(s, d.workloads.get(s.id, 'vm', a.vm)),
      startVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        await this.vmDriver().start(s.id, w.id);
        return this.vmView(s, w);
      },
      stopVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        await this.vmDriver().stop(s.id, w.id, { graceSeconds: 10 });
        return this.vmView(s, w);
      },
      deleteVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        // Idempotent against a domain already gone, as for containers.
        await this.vmDriver()
          .stop(s.id, w.id, { graceSeconds: 0 })
          .catch((err: unknown) => this.ignoreGone(err));
        await this.vmDriver()
          .undefine(s.id, w.id)
          .catch((err: unknown) => this.ignoreGone(err));
        await rm(join((await this.data(s)).vms, w.id), { recursive: true, force: true });
        d.workloads.remove(w.id);
        return {};
      },
      vmConsole: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        return this.vmDriver().readConsole(s.id, w.id, { tailBytes: a.tail });
      },
      issuerKeys: async () => d.issuerKeys(),
    };
  }

  /**
   * Runs one operation for `spaceId` (known from the socket, not from the caller). `op` and
   * `args` are untrusted. Refusals are audited with their code; unexpected failures become
   * `host_failed` (502, naming the part of the host that failed) after the detail went to the log.
   */
  async call(spaceId: string, op: string, args: unknown): Promise<unknown> {
    const actor = `space:${spaceId}`;
    if (!isBrokerOp(op)) throw new OcsError('not_found', 'no such broker operation');
    const mutating = !READ_ONLY.has(op);
    try {
      const checked = validate(BROKER_OPS[op].args, args);
      const space = this.d.spaces.get(spaceId);
      if (!space || space.state === 'destroyed' || space.state === 'destroying')
        throw new OcsError('not_found', 'no such space');
      if (space.state !== 'active') throw new OcsError('space_locked', 'the space is locked');
      const result = await (this.handlers[op] as Handler<BrokerOp>)(space, checked as never);
      if (mutating) this.d.audit.append({ actor, action: `broker.${op}`, target: spaceId, outcome: 'ok' });
      return result;
    } catch (err) {
      const e = isOcsError(err) ? err : hostFailed(op);
      if (!isOcsError(err)) this.d.logger.error({ err, spaceId, op }, 'broker operation failed');
      this.d.refusals.record({
        // A read that finds nothing is routine: counted, not chained.
        chainAs: mutating || e.code !== 'not_found' ? { key: actor, actor } : undefined,
        action: `broker.${op}`,
        target: spaceId,
        code: e.code,
      });
      throw e;
    }
  }

  // ---- volumes -------------------------------------------------------------------------------

  private async createVolume(s: SpaceRow, a: BrokerArgs<'createVolume'>): Promise<Volume> {
    const id = newId('vol');
    const row = this.d.workloads.reserve(budgetOf(s), {
      id,
      spaceId: s.id,
      kind: 'volume',
      name: a.name,
      spec: { name: a.name, sizeBytes: a.sizeBytes },
      cpuMillicores: 0,
      memoryBytes: 0,
      storageBytes: a.sizeBytes,
      pids: 0,
    });
    const key = newVolumeKey();
    try {
      const { keys } = await this.data(s);
      // Key first: a crash after this leaves a key without a volume (shredded by cleanup), never
      // a volume whose key is lost.
      await storeVolumeKey(keys, id, key);
      const { path } = await this.d.storage.createVolume(s.id, id, a.sizeBytes, key);
      this.d.workloads.markReady(id, { name: a.name, sizeBytes: a.sizeBytes, path });
      return this.volumeView(s, { ...row, state: 'ready' });
    } catch (err) {
      await this.d.storage.destroyVolume(s.id, id).catch(() => undefined);
      await shredVolumeKey((await this.data(s)).keys, id).catch(() => undefined);
      this.d.workloads.remove(id);
      throw err;
    } finally {
      key.fill(0);
    }
  }

  private async deleteVolume(s: SpaceRow, nameOrId: string): Promise<Record<string, never>> {
    const w = this.d.workloads.get(s.id, 'volume', nameOrId);
    const users = this.d.workloads
      .list(s.id, 'container')
      .filter((c) => (c.spec as { mounts?: { volume: string }[] }).mounts?.some((m) => m.volume === w.name));
    if (users.length > 0)
      throw new OcsError('conflict', 'containers mount this volume; delete them first', {
        containers: users.map((c) => c.name),
      });
    await this.d.storage.destroyVolume(s.id, w.id);
    await shredVolumeKey((await this.data(s)).keys, w.id);
    this.d.workloads.remove(w.id);
    return {};
  }

  private volumeView(s: SpaceRow, w: WorkloadRow): Volume {
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
    for (const w of this.d.workloads.list(spaceId, 'volume')) {
      const key = await readVolumeKey(keys, w.id);
      if (!key) {
        this.d.logger.warn({ spaceId, volumeId: w.id }, 'volume has no key; it stays locked');
        continue;
      }
      try {
        await this.d.storage.unlockVolume(spaceId, w.id, key).catch((err: unknown) => {
          if (!(isOcsError(err) && err.code === 'space_unlocked')) throw err;
        });
      } finally {
        key.fill(0);
      }
    }
  }

  // ---- images --------------------------------------------------------------------------------

  private async loadImage(s: SpaceRow, image: string, file: string): Promise<BrokerResult<'loadImage'>> {
    const data = await this.data(s);
    const path = join(data.files, file);
    const fh = await openUploaded(path);
    try {
      const size = (await fh.stat()).size;
      const left = s.storageBytes - this.d.workloads.used(s.id).storageBytes;
      const { dockerId, sizeBytes } = await this.docker().loadImage(s.id, image, fh.createReadStream(), {
        tmpDir: data.spool,
        maxBytes: Math.max(0, Math.min(left, size)),
      });
      return { name: image, tag: 'latest', dockerId, sizeBytes, loadedAt: new Date(this.d.clock.now()).toISOString() };
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  // ---- containers ----------------------------------------------------------------------------

  private async createContainer(s: SpaceRow, a: BrokerArgs<'createContainer'>): Promise<Container> {
    const docker = this.docker();
    const budget = budgetOf(s);
    // Mounts name the space's own volumes; the host path comes from the storage driver, never the caller.
    const mounts = [];
    for (const m of a.mounts ?? []) {
      const v = this.d.workloads.get(s.id, 'volume', m.volume);
      const path = (v.spec as { path?: string }).path;
      if (v.state !== 'ready' || !path)
        throw new OcsError('conflict', `volume ${m.volume} is not ready`, { volume: m.volume });
      mounts.push({ source: path, target: m.target, readOnly: m.readOnly === true });
    }
    const left = budget.pids === undefined ? undefined : budget.pids - this.d.workloads.used(s.id).pids;
    const pids = a.pids ?? Math.min(this.d.defaultContainerPids ?? DEFAULT_CONTAINER_PIDS, left ?? Infinity);
    const id = newId('ctr');
    const row = this.d.workloads.reserve(budget, {
      id,
      spaceId: s.id,
      kind: 'container',
      name: a.name,
      spec: { ...a, pids },
      cpuMillicores: a.cpuMillicores,
      memoryBytes: a.memoryBytes,
      storageBytes: 0,
      pids: Math.max(pids, 1),
    });
    try {
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
        cgroupParent: this.d.cgroups.dockerParent(spaceCgroupLayout(this.d.cgroupParent, s.id).workloads),
        mounts,
        capAdd: a.capAdd ?? [],
        ...(a.readOnlyRootfs !== undefined ? { readOnlyRootfs: a.readOnlyRootfs } : {}),
      });
      if (a.start !== false) await docker.start(s.id, id);
      this.d.workloads.markReady(id);
      return await this.containerView(s, { ...row, state: 'ready' });
    } catch (err) {
      await docker.remove(s.id, id).catch(() => undefined);
      this.d.workloads.remove(id);
      throw err;
    }
  }

  private async containerView(s: SpaceRow, w: WorkloadRow): Promise<Container> {
    const st = await this.docker()
      .inspect(s.id, w.id)
      .catch((err: unknown) => {
        if (isOcsError(err) && err.code === 'not_found') return undefined;
        throw err;
      });
    const spec = w.spec as { image: string };
    return {
      id: w.id,
      name: w.name,
      image: spec.image,
      state: (st?.state ?? 'dead') as Container['state'],
      ...(st?.exitCode !== undefined ? { exitCode: st.exitCode } : {}),
      ...(st ? { oomKilled: st.oomKilled } : {}),
      cpuMillicores: w.cpuMillicores,
      memoryBytes: w.memoryBytes,
      pids: w.pids,
      createdAt: new Date(w.createdAt).toISOString(),
    };
  }

  // ---- VMs -----------------------------------------------------------------------------------

  private async createVm(s: SpaceRow, a: BrokerArgs<'createVm'>): Promise<Vm> {
    const vms = this.vmDriver();
    const data = await this.data(s);
    const id = newId('vm');
    const file = (name: string) => join(data.files, name);
    for (const name of a.boot.kind === 'kernel' ? [a.boot.kernel, a.boot.initrd] : [])
      if (name !== undefined) await requireUploaded(file(name), name);
    // A disk-booted VM gets its own copy of the uploaded image (the upload is a template, and
    // QEMU runs as a uid that cannot read the space's home); the copy counts against storage.
    const bootDisk = a.boot.kind === 'disk' ? await openUploaded(file(a.boot.disk)) : undefined;
    const bootBytes = bootDisk ? (await bootDisk.stat()).size : 0;
    let row: WorkloadRow;
    try {
      row = this.d.workloads.reserve(budgetOf(s), {
        id,
        spaceId: s.id,
        kind: 'vm',
        name: a.name,
        spec: a,
        cpuMillicores: a.vcpus * VM_CPU_PER_VCPU,
        memoryBytes: a.memoryBytes,
        storageBytes: (a.diskBytes ?? 0) + bootBytes,
        pids: 0,
      });
    } catch (err) {
      await bootDisk?.close();
      throw err;
    }
    const qemuUid = this.d.workloadUid(s.uid);
    const dir = join(data.vms, id);
    try {
      // Root's directory: the space cannot swap the disk or the console for a link.
      await mkdir(dir, { mode: 0o711 });
      let diskPath: string | undefined;
      if (a.diskBytes) {
        diskPath = join(dir, 'disk.raw');
        await writeNewFile(diskPath, qemuUid, (fh) => fh.truncate(a.diskBytes));
      }
      let bootPath: string | undefined;
      if (bootDisk) {
        bootPath = join(dir, 'boot.img');
        try {
          await writeNewFile(bootPath, qemuUid, (fh) => copyHandle(bootDisk, fh));
        } finally {
          await bootDisk.close();
        }
      }
      const spec: VmSpec = {
        spaceId: s.id,
        vmId: id,
        name: a.name,
        vcpus: a.vcpus,
        memoryBytes: a.memoryBytes,
        boot:
          a.boot.kind === 'kernel'
            ? {
                kind: 'kernel',
                kernel: file(a.boot.kernel),
                ...(a.boot.initrd !== undefined ? { initrd: file(a.boot.initrd) } : {}),
                ...(a.boot.cmdline !== undefined ? { cmdline: a.boot.cmdline } : {}),
              }
            : { kind: 'disk', disk: bootPath! },
        ...(diskPath ? { diskPath } : {}),
        consoleLogPath: join(dir, 'console.log'),
        cgroupPartition: `/${spaceCgroupLayout(this.d.cgroupParent, s.id).vms}`,
        runAsUid: qemuUid,
        storageRoot: data.root,
      };
      await vms.define(spec);
      if (a.start !== false) await vms.start(s.id, id);
      this.d.workloads.markReady(id);
      return await this.vmView(s, { ...row, state: 'ready' });
    } catch (err) {
      await bootDisk?.close().catch(() => undefined);
      await vms.stop(s.id, id, { graceSeconds: 0 }).catch(() => undefined);
      await vms.undefine(s.id, id).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      this.d.workloads.remove(id);
      throw err;
    }
  }

  private async vmView(s: SpaceRow, w: WorkloadRow): Promise<Vm> {
    const vms = this.vmDriver();
    const state = await vms.state(s.id, w.id).catch((err: unknown) => {
      if (isOcsError(err) && err.code === 'not_found') return 'crashed' as const;
      throw err;
    });
    return {
      id: w.id,
      name: w.name,
      state,
      vcpus: w.cpuMillicores / VM_CPU_PER_VCPU,
      memoryBytes: w.memoryBytes,
      accelerator: vms.accelerator,
      createdAt: new Date(w.createdAt).toISOString(),
    };
  }

  // ---- the space's workloads as a whole (lock, expiry, destroy, reconciliation) --------------

  /** Stops every container and VM of the space (before its storage locks). */
  async stopAll(spaceId: string): Promise<void> {
    for (const w of this.d.workloads.list(spaceId)) {
      if (w.kind === 'container' && this.d.docker)
        await this.d.docker.stop(spaceId, w.id, 5).catch((err: unknown) => this.ignoreGone(err));
      if (w.kind === 'vm' && this.d.vms)
        await this.d.vms.stop(spaceId, w.id, { graceSeconds: 5 }).catch((err: unknown) => this.ignoreGone(err));
    }
  }

  /** Removes every container, VM, network and image name of the space, and forgets its records. */
  async removeAll(spaceId: string): Promise<void> {
    this.mountpoints.delete(spaceId);
    if (this.d.docker) await this.d.docker.removeAllForSpace(spaceId);
    if (this.d.vms) await this.d.vms.removeAllForSpace(spaceId);
    this.d.workloads.removeSpace(spaceId);
  }

  /**
   * On start, after the spaces are reconciled: workloads half-made when the daemon died are
   * undone, and containers and VMs that no record explains (their space is gone, or they were
   * never recorded) are removed. Records are the truth for what a space holds; the host for
   * what exists.
   */
  async reconcile(): Promise<{
    undone: string[];
    orphanContainers: string[];
    orphanVms: string[];
    orphanSpaces: string[];
  }> {
    const report = {
      undone: [] as string[],
      orphanContainers: [] as string[],
      orphanVms: [] as string[],
      orphanSpaces: [] as string[],
    };
    const records = this.d.spaces.list({});
    const live = new Set(records.filter((r) => ['active', 'locked', 'expired'].includes(r.state)).map((r) => r.id));
    // A space this database never knew is another daemon's (tests run several on one dockerd):
    // it is never touched. Ours are recorded before any host object is made, so none is missed.
    const ours = new Set(records.map((r) => r.id));
    for (const w of this.d.workloads.listAll()) {
      if (!live.has(w.spaceId)) {
        this.d.workloads.remove(w.id);
        continue;
      }
      if (w.state !== 'creating') continue;
      switch (w.kind) {
        case 'container':
          await this.d.docker?.remove(w.spaceId, w.id).catch((err: unknown) => this.ignoreGone(err));
          break;
        case 'vm':
          await this.d.vms?.stop(w.spaceId, w.id, { graceSeconds: 0 }).catch((err: unknown) => this.ignoreGone(err));
          await this.d.vms?.undefine(w.spaceId, w.id).catch((err: unknown) => this.ignoreGone(err));
          break;
        case 'volume': {
          // Only while the space is unlocked can its volume and key be removed; otherwise the
          // record stays `creating` (it still counts against the budget) until a later start.
          const info = await this.d.storage.info(w.spaceId).catch(() => undefined);
          if (!info?.unlocked) continue;
          await this.d.storage.destroyVolume(w.spaceId, w.id);
          await shredVolumeKey(spaceDataLayout(info.mountpoint).keys, w.id);
          break;
        }
      }
      this.d.workloads.remove(w.id);
      report.undone.push(w.id);
    }
    const known = new Set(this.d.workloads.listAll().map((w) => w.id));
    for (const [driver, kind] of [
      [this.d.docker, 'container'],
      [this.d.vms, 'vm'],
    ] as const) {
      if (!driver) continue;
      for (const [spaceId, ids] of await driver.listAllSpaces()) {
        if (!ours.has(spaceId)) continue;
        if (!live.has(spaceId)) {
          await driver.removeAllForSpace(spaceId);
          report.orphanSpaces.push(spaceId);
          continue;
        }
        for (const id of ids.filter((i) => !known.has(i))) {
          if (kind === 'container')
            await this.d.docker!.remove(spaceId, id).catch((err: unknown) => this.ignoreGone(err));
          else {
            await this.d.vms!.stop(spaceId, id, { graceSeconds: 0 }).catch((err: unknown) => this.ignoreGone(err));
            await this.d.vms!.undefine(spaceId, id).catch((err: unknown) => this.ignoreGone(err));
          }
          (kind === 'container' ? report.orphanContainers : report.orphanVms).push(id);
        }
      }
    }
    if (Object.values(report).some((v) => v.length > 0)) this.d.logger.warn(report, 'reconciled workloads');
    return report;
  }

  private ignoreGone(err: unknown): void {
    if (isOcsError(err) && err.code === 'not_found') return;
    throw err;
  }

  // ---- helpers -------------------------------------------------------------------------------

  private docker(): DockerDriver {
    if (!this.d.docker) throw new OcsError('unavailable', 'this node runs no containers');
    return this.d.docker;
  }

  private vmDriver(): VmDriver {
    if (!this.d.vms) throw new OcsError('unavailable', 'this node runs no VMs');
    return this.d.vms;
  }

  /** The space's storage layout; the mountpoint is asked of the driver once per space. */
  private async data(s: SpaceRow): Promise<ReturnType<typeof spaceDataLayout>> {
    let mp = this.mountpoints.get(s.id);
    if (!mp) {
      mp = (await this.d.storage.info(s.id)).mountpoint;
      this.mountpoints.set(s.id, mp);
    }
    return spaceDataLayout(mp);
  }

  private readonly mountpoints = new Map<string, string>();
}

/** What a space may hold: its reservation. */
export function budgetOf(s: SpaceRow): Budget {
  return {
    cpuMillicores: s.cpuMillicores,
    memoryBytes: s.memoryBytes,
    storageBytes: s.storageBytes,
    ...(s.pids ? { pids: s.pids } : {}),
  };
}

/**
 * An uploaded file, opened as root so that a link the space planted anywhere on the path (the
 * file itself, or its `files/` directory, which the space owns) is refused, not followed.
 */
async function openUploaded(path: string): Promise<FileHandle> {
  const fh = await openExactFile('file', path);
  if (!fh) throw new OcsError('not_found', 'no such uploaded file');
  return fh;
}

/** Creates `path` (never following or replacing anything there), fills it, and gives it to `uid`. */
async function writeNewFile(path: string, uid: number, fill: (fh: FileHandle) => Promise<unknown>): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fill(fh);
    await fh.chown(uid, uid);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Copies one open file to another in 1 MiB steps (both handles stay the caller's). */
async function copyHandle(from: FileHandle, to: FileHandle): Promise<void> {
  const buf = Buffer.alloc(1024 * 1024);
  for (let pos = 0; ;) {
    const { bytesRead } = await from.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) return;
    await to.write(buf, 0, bytesRead, pos);
    pos += bytesRead;
  }
}

async function requireUploaded(path: string, name: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new OcsError('not_found', `no uploaded file ${name}`, { file: name });
}

/** A host failure the caller cannot fix, named by the part of the host it hit; the detail is in the log. */
export function hostFailed(op: BrokerOp): OcsError {
  const part = /Vm|vm/.test(op)
    ? 'libvirt/QEMU'
    : /Container|Image|container|image/.test(op)
      ? 'the container engine'
      : /Volume/.test(op)
        ? 'the storage'
        : 'the host';
  return new OcsError('host_failed', `${part} failed to carry out ${op}; the node's log has the detail`, { op });
}
