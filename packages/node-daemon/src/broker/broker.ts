/**
 * The privileged broker: the only code that turns a space's wishes into host objects. It is
 * called with the space id its socket belongs to, never one the caller names, and re-checks
 * everything itself: the arguments against the schemas, the space's state, its remaining budget
 * (summed in one transaction), that every path lies in the space's own storage, and that every
 * container and VM lands in the space's cgroup. The drivers add the hardening on top.
 */
import { constants } from 'node:fs';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  openExactFile,
  type CgroupDriver,
  type DockerDriver,
  type EngineSpace,
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
import { readRecord, removeRecord, writeRecord } from './records.js';

export interface BrokerDeps {
  spaces: SpacesRepo;
  workloads: WorkloadsRepo;
  audit: AuditLog;
  /** Refusals: counted, and chained under the space within its budget. */
  refusals: RefusalLog;
  storage: StorageDriver;
  cgroups: CgroupDriver;
  /** The spaces' container engines; absent: the node runs no containers (`unavailable`). */
  containers?: ContainerEngines | undefined;
  /** How each space's engine is made: subordinate ids and subnet (from its uid's slot). */
  workloadIds(uid: number): { idMap: { base: number; size: number }; subnet: string };
  /** How long lock and expiry let containers and VMs shut down before they are killed. */
  stopGraceSeconds?: number;
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
const DEFAULT_STOP_GRACE_SECONDS = 3;

/** The spaces' container engines, as the broker uses them (`SpaceEngines` on a real node). */
export interface ContainerEngines {
  /** The space's Docker driver, its engine started if it is not serving. */
  driver(space: EngineSpace): Promise<DockerDriver>;
  /** Stops the space's containers and its engine; returns the ids that were running. */
  stop(space: EngineSpace): Promise<string[]>;
  /** Kills everything of the space's engine (its store goes with the space's storage). */
  remove(space: Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'>): Promise<void>;
  /** Spaces whose engine may still run here (after a crash, before reconciliation). */
  spacesWithRunDirs(): Promise<string[]>;
}

/** What ran when a space was locked; unlock starts it again. Lives inside the space. */
interface RunningAtLock {
  containers: string[];
  vms: string[];
}
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
        images: (await (await this.docker(s)).listImages(s.id)).map((i) => ({
          name: i.name,
          tag: 'latest',
          dockerId: i.dockerId,
          sizeBytes: i.sizeBytes,
          loadedAt: new Date(i.created).toISOString(),
        })),
      }),
      deleteImage: async (s, a) => {
        await (await this.docker(s)).removeImage(s.id, a.image);
        return {};
      },
      createContainer: (s, a) => this.createContainer(s, a),
      listContainers: async (s) => ({
        containers: await Promise.all(d.workloads.list(s.id, 'container').map((w) => this.containerView(s, w))),
      }),
      getContainer: (s, a) => this.containerView(s, d.workloads.get(s.id, 'container', a.container)),
      startContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        await (await this.docker(s)).start(s.id, w.id);
        return this.containerView(s, w);
      },
      stopContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        await (await this.docker(s)).stop(s.id, w.id);
        return this.containerView(s, w);
      },
      deleteContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        // Idempotent against a container already gone (a crash after the engine removed it,
        // before the record went): the owner's retry removes the record instead of a 404 forever.
        await (await this.docker(s)).remove(s.id, w.id).catch((err: unknown) => this.ignoreGone(err));
        d.workloads.remove(w.id);
        return {};
      },
      containerLogs: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        return (await this.docker(s)).logs(s.id, w.id, { tailLines: a.tail });
      },
      containerStats: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        return (await this.docker(s)).stats(s.id, w.id);
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
        await removeRecord((await this.data(s)).records, w.id);
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
      spec: { sizeBytes: a.sizeBytes },
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
      this.d.workloads.markReady(id, { sizeBytes: a.sizeBytes, path });
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
    const { records } = await this.data(s);
    const users: WorkloadRow[] = [];
    for (const c of this.d.workloads.list(s.id, 'container')) {
      type Mounts = { mounts?: { volume: string }[] };
      const r = (await readRecord<Mounts>(records, c.id)) ?? (c.spec as Mounts);
      if (r?.mounts?.some((m) => m.volume === w.name || m.volume === w.id)) users.push(c);
    }
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
      const { dockerId, sizeBytes } = await (
        await this.docker(s)
      ).loadImage(s.id, image, fh.createReadStream(), {
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
    const docker = await this.docker(s);
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
    // The container's root is the space's first subordinate uid, not the host's root: the
    // volume's top directory is given to it (what is inside stays as the container made it).
    const root = this.d.workloadIds(s.uid).idMap.base;
    for (const m of mounts) await chownRoot(m.source, root);
    const left = budget.pids === undefined ? undefined : budget.pids - this.d.workloads.used(s.id).pids;
    const pids = a.pids ?? Math.min(this.d.defaultContainerPids ?? DEFAULT_CONTAINER_PIDS, left ?? Infinity);
    const id = newId('ctr');
    const row = this.d.workloads.reserve(budget, {
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
    });
    const { records } = await this.data(s);
    try {
      await writeRecord(records, id, { ...a, pids });
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
        cgroupParent: this.d.cgroups.dockerParent(spaceCgroupLayout(this.d.cgroupParent, s.id).containers),
        mounts,
        capAdd: a.capAdd ?? [],
        ...(a.readOnlyRootfs !== undefined ? { readOnlyRootfs: a.readOnlyRootfs } : {}),
      });
      if (a.start !== false) await docker.start(s.id, id);
      this.d.workloads.markReady(id);
      return await this.containerView(s, { ...row, state: 'ready' });
    } catch (err) {
      await docker.remove(s.id, id).catch(() => undefined);
      await removeRecord(records, id).catch(() => undefined);
      this.d.workloads.remove(id);
      throw err;
    }
  }

  private async containerView(s: SpaceRow, w: WorkloadRow): Promise<Container> {
    const st = await (await this.docker(s)).inspect(s.id, w.id).catch((err: unknown) => {
      if (isOcsError(err) && err.code === 'not_found') return undefined;
      throw err;
    });
    const spec =
      (await readRecord<{ image: string }>((await this.data(s)).records, w.id)) ?? (w.spec as { image: string });
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
        spec: {},
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
      await writeRecord(data.records, id, a);
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
      await removeRecord(data.records, id).catch(() => undefined);
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

  /**
   * Stops the space's containers (with its engine) and VMs before its storage locks, in
   * parallel, each given `stopGraceSeconds` (default 3 s) to shut down before it is killed: the
   * lock waits at most that long plus the kill. What was running is written into the space
   * (still unlocked here), so unlock can start it again.
   */
  async stopAll(spaceId: string): Promise<void> {
    const s = this.d.spaces.get(spaceId);
    if (!s) return;
    const grace = this.d.stopGraceSeconds ?? DEFAULT_STOP_GRACE_SECONDS;
    const info = await this.d.storage.info(spaceId).catch(() => undefined);
    const running: RunningAtLock = { containers: [], vms: [] };
    const vmStops = this.d.vms
      ? this.d.workloads.list(spaceId, 'vm').map(async (w) => {
          const vms = this.d.vms!;
          const state = await vms.state(spaceId, w.id).catch(() => 'gone');
          if (state === 'running') running.vms.push(w.id);
          await vms.stop(spaceId, w.id, { graceSeconds: grace }).catch((err: unknown) => this.ignoreGone(err));
        })
      : [];
    const containerStop = (async () => {
      if (!this.d.containers || !info?.unlocked) {
        await this.d.containers?.remove(this.engineGroups(spaceId));
        return;
      }
      running.containers = await this.d.containers.stop(this.engineSpace(s, info.mountpoint));
    })();
    await Promise.all([containerStop, ...vmStops]);
    if (info?.unlocked) {
      const file = spaceDataLayout(info.mountpoint).runningAtLock;
      await writeFile(file, JSON.stringify(running), { mode: 0o600 }).catch((err: unknown) =>
        this.d.logger.warn({ err, spaceId }, 'could not record what ran at lock'),
      );
    }
  }

  /**
   * After unlock: starts again what ran when the space was locked (containers from the space's
   * engine, whose store survived in the space; VMs from their definitions). A workload that
   * cannot start is logged and left stopped; the owner sees its state.
   */
  async restore(spaceId: string, mountpoint: string): Promise<void> {
    const s = this.d.spaces.get(spaceId);
    if (!s) return;
    const file = spaceDataLayout(mountpoint).runningAtLock;
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    await rm(file, { force: true });
    let running: RunningAtLock;
    try {
      running = JSON.parse(text) as RunningAtLock;
    } catch {
      return;
    }
    const known = new Set(this.d.workloads.list(spaceId).map((w) => w.id));
    if (this.d.containers && running.containers.length > 0) {
      const docker = await this.d.containers.driver(this.engineSpace(s, mountpoint));
      for (const id of running.containers.filter((i) => known.has(i)))
        await docker
          .start(spaceId, id)
          .catch((err: unknown) => this.d.logger.warn({ err, spaceId, id }, 'container not restored'));
    }
    for (const id of (running.vms ?? []).filter((i) => known.has(i)))
      await this.d.vms
        ?.start(spaceId, id)
        .catch((err: unknown) => this.d.logger.warn({ err, spaceId, id }, 'VM not restored'));
  }

  /** Removes every container, VM, network and image name of the space, and forgets its records. */
  async removeAll(spaceId: string): Promise<void> {
    this.mountpoints.delete(spaceId);
    // The engine's store is in the space's storage, destroyed with it.
    if (this.d.containers) await this.d.containers.remove(this.engineGroups(spaceId));
    if (this.d.vms) await this.d.vms.removeAllForSpace(spaceId);
    this.d.workloads.removeSpace(spaceId);
  }

  /**
   * On start, after the spaces are reconciled: workloads half-made when the daemon died are
   * undone, an engine left running for a space that is not active is stopped, and containers
   * and VMs that no record explains are removed. Records are the truth for what a space holds;
   * the host for what exists.
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
    const active = new Map(records.filter((r) => r.state === 'active').map((r) => [r.id, r]));
    // A space this database never knew is another daemon's (tests run several on one host):
    // it is never touched. Ours are recorded before any host object is made, so none is missed.
    const ours = new Set(records.map((r) => r.id));
    // Engines: one of a space that is not active any more is stopped (a gone one removed).
    if (this.d.containers)
      for (const spaceId of await this.d.containers.spacesWithRunDirs()) {
        if (!ours.has(spaceId) || active.has(spaceId)) continue;
        await this.d.containers.remove(this.engineGroups(spaceId));
        if (!live.has(spaceId)) report.orphanSpaces.push(spaceId);
      }
    for (const w of this.d.workloads.listAll()) {
      if (!live.has(w.spaceId)) {
        this.d.workloads.remove(w.id);
        continue;
      }
      if (w.state !== 'creating') continue;
      const space = active.get(w.spaceId);
      switch (w.kind) {
        case 'container':
          // Only an active space's engine can be asked; otherwise the record waits for a later start.
          if (!space) continue;
          await (await this.docker(space)).remove(w.spaceId, w.id).catch((err: unknown) => this.ignoreGone(err));
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
    // Containers: each active space's engine, if it is running, lists what it holds.
    if (this.d.containers)
      for (const [spaceId, space] of active) {
        const info = await this.d.storage.info(spaceId).catch(() => undefined);
        if (!info?.unlocked || !existsSync(join(spaceDataLayout(info.mountpoint).engine, 'storage'))) continue;
        const docker = await this.d.containers.driver(this.engineSpace(space, info.mountpoint));
        for (const c of await docker.list(spaceId)) {
          if (known.has(c.containerId)) continue;
          await docker.remove(spaceId, c.containerId).catch((err: unknown) => this.ignoreGone(err));
          report.orphanContainers.push(c.containerId);
        }
      }
    if (this.d.vms)
      for (const [spaceId, ids] of await this.d.vms.listAllSpaces()) {
        if (!ours.has(spaceId)) continue;
        if (!live.has(spaceId)) {
          await this.d.vms.removeAllForSpace(spaceId);
          report.orphanSpaces.push(spaceId);
          continue;
        }
        for (const id of ids.filter((i) => !known.has(i))) {
          await this.d.vms.stop(spaceId, id, { graceSeconds: 0 }).catch((err: unknown) => this.ignoreGone(err));
          await this.d.vms.undefine(spaceId, id).catch((err: unknown) => this.ignoreGone(err));
          report.orphanVms.push(id);
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

  /** The space's own engine (started if it is not serving), its store in the space. */
  private async docker(s: SpaceRow): Promise<DockerDriver> {
    if (!this.d.containers) throw new OcsError('unavailable', 'this node runs no containers');
    return this.d.containers.driver(this.engineSpace(s, (await this.data(s)).root));
  }

  private engineGroups(spaceId: string): Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'> {
    const l = spaceCgroupLayout(this.d.cgroupParent, spaceId);
    return { spaceId, engineGroup: l.engine, containersGroup: l.containers };
  }

  private engineSpace(s: SpaceRow, mountpoint: string): EngineSpace {
    return {
      ...this.engineGroups(s.id),
      dataDir: spaceDataLayout(mountpoint).engine,
      ...this.d.workloadIds(s.uid),
    };
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

/** Gives a volume's top directory to `uid` unless it has it (opened without following a link). */
async function chownRoot(dir: string, uid: number): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (st.uid !== uid || st.gid !== uid) await fh.chown(uid, uid);
  } finally {
    await fh.close();
  }
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
