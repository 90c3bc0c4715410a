/**
 * The VM kind: transient libvirt domains whose definitions, disks and consoles live in the
 * space's `node/vms/<id>/`, run by QEMU as the space's workload uid inside the space's cgroup.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { bridgeName, spaceSubnet, type VmDriver, type VmSpec } from '@ocs/host';
import { isOcsError, type BrokerArgs, type Vm } from '@ocs/protocol';
import type { RemapFrom, SpaceRow, WorkloadRow } from '../state/index.js';
import { newId } from '../ids.js';
import { spaceCgroupLayout, spaceDataLayout } from '../spaces/layout.js';
import { budgetOf, type WorkloadContext } from './context.js';
import type { HandlersOf, OperationModule, Orphans, SpacesView, StorageState, WorkloadKind } from './kind.js';
import { readRecord, removeRecord, renameRecord, writeRecord } from './records.js';
import { copyHandle, openUploaded, requireUploaded, writeNewFile } from './uploaded.js';

/** QEMU's own threads and memory beyond the guest's are charged to the space's cgroup, not here. */
export const VM_CPU_PER_VCPU = 1000;

/** How long an owner's stop gives the guest to shut down before it is destroyed. */
const STOP_GRACE_SECONDS = 10;

export class Vms implements WorkloadKind<'vm'>, OperationModule<'vm'> {
  readonly kind = 'vm';
  readonly kinds = ['vm'] as const;
  readonly handlers: HandlersOf<'vm'>;

  constructor(private readonly c: WorkloadContext) {
    const vm = (s: SpaceRow, name: string) => c.d.workloads.get(s.id, 'vm', name);
    this.handlers = {
      createVm: (s, a) => this.create(s, a),
      listVms: async (s) => ({
        vms: await Promise.all(c.d.workloads.list(s.id, 'vm').map((w) => this.view(s, w))),
      }),
      getVm: (s, a) => this.view(s, vm(s, a.vm)),
      startVm: async (s, a) => {
        const w = vm(s, a.vm);
        await c.vmDriver().start(s.id, w.id);
        return this.view(s, w);
      },
      stopVm: async (s, a) => {
        const w = vm(s, a.vm);
        await c.vmDriver().stop(s.id, w.id, { graceSeconds: STOP_GRACE_SECONDS });
        return this.view(s, w);
      },
      deleteVm: (s, a) => this.remove(s, a.vm),
      vmConsole: async (s, a) => c.vmDriver().readConsole(s.id, vm(s, a.vm).id, { tailBytes: a.tail }),
    };
  }

  async create(s: SpaceRow, a: BrokerArgs<'createVm'>): Promise<Vm> {
    const vms = this.c.vmDriver();
    const data = await this.c.data(s);
    const id = newId('vm');
    const file = (name: string) => join(data.files, name);
    for (const name of a.boot.kind === 'kernel' ? [a.boot.kernel, a.boot.initrd] : [])
      if (name !== undefined) await requireUploaded(file(name), name);
    // A disk-booted VM gets its own copy of the uploaded image (the upload is a template, and
    // QEMU runs as a uid that cannot read the space's home); the copy counts against storage.
    const bootDisk = a.boot.kind === 'disk' ? await openUploaded(file(a.boot.disk)) : undefined;
    const bootBytes = bootDisk ? (await bootDisk.stat()).size : 0;
    let row: WorkloadRow;
    // The space's network (its subnet recorded now, at first use), and the VM's address on it.
    const networks = this.c.d.networks;
    const { subnet } = this.c.workloadIds(s);
    try {
      row = this.c.d.workloads.reserve(
        budgetOf(s),
        {
          id,
          spaceId: s.id,
          kind: 'vm',
          name: a.name,
          spec: {},
          cpuMillicores: a.vcpus * VM_CPU_PER_VCPU,
          memoryBytes: a.memoryBytes,
          storageBytes: (a.diskBytes ?? 0) + bootBytes,
          pids: 0,
        },
        networks ? { addresses: networks.addresses(subnet, 'vm') } : {},
      );
    } catch (err) {
      await bootDisk?.close();
      throw err;
    }
    const qemuUid = this.c.d.workloadUid(s.uid);
    const dir = join(data.vms, id);
    const undo = this.c.revert(s.id, id);
    try {
      undo.push('remove record', () => removeRecord(data.records, id));
      await writeRecord(data.records, id, a);
      undo.push('remove directory', () => rm(dir, { recursive: true, force: true }));
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
      if (networks) await networks.ensure(s);
      const spec = this.specOf(s, data, id, a, { bootPath, diskPath, address: row.address });
      // Before define and start: either may fail half-way (or before there is anything: not_found).
      undo.push('tear down', () => this.tearDown(vms, s.id, id));
      await vms.define(spec);
      if (a.start !== false) await vms.start(s.id, id);
      this.c.d.workloads.markReady(id);
      return await this.view(s, { ...row, state: 'ready' });
    } catch (err) {
      // Closed already unless the failure came before the copy; a second close is harmless.
      await bootDisk?.close().catch(() => undefined);
      await undo.run();
      this.c.d.workloads.remove(id);
      throw err;
    }
  }

  /** The domain a VM's record describes, with its files in the space's `node/vms/<id>/`. */
  private specOf(
    s: SpaceRow,
    data: ReturnType<typeof spaceDataLayout>,
    id: string,
    a: BrokerArgs<'createVm'>,
    o: { bootPath: string | undefined; diskPath: string | undefined; address: string | null },
  ): VmSpec {
    const file = (name: string) => join(data.files, name);
    const dir = join(data.vms, id);
    const subnet = this.c.workloadIds(s).subnet;
    const net = o.address !== null ? vmNetwork(s.id, subnet, o.address) : undefined;
    // The guest sets its address itself (no DHCP on a space's network): a kernel it boots reads it here.
    const cmdline =
      a.boot.kind === 'kernel' && net
        ? [a.boot.cmdline, `ocs.ip=${net.view.address} ocs.gw=${net.view.gateway}`].filter(Boolean).join(' ')
        : a.boot.kind === 'kernel'
          ? a.boot.cmdline
          : undefined;
    return {
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
              ...(cmdline !== undefined ? { cmdline } : {}),
            }
          : { kind: 'disk', disk: o.bootPath! },
      ...(o.diskPath ? { diskPath: o.diskPath } : {}),
      consoleLogPath: join(dir, 'console.log'),
      // Absolute in the hierarchy: below the daemon's delegated group when it has one.
      cgroupPartition: this.c.d.cgroups.absolutePath(spaceCgroupLayout(this.c.d.cgroupParent, s.id).vms),
      runAsUid: this.c.d.workloadUid(s.uid),
      storageRoot: data.root,
      ...(net ? { network: net.spec } : {}),
    };
  }

  /**
   * A restored space's VMs, made this node's: each VM's directory (its disks, its console) and
   * record take its new id, and its domain is defined anew from the record, with this space's
   * ids, QEMU uid, cgroup and an address of this node's network (the old definition named the
   * archived space's). Its disks' owners were moved by the walk before. None is started here.
   */
  async remap(s: SpaceRow, mountpoint: string, from: RemapFrom): Promise<void> {
    const mine = this.c.d.workloads.list(s.id, 'vm');
    if (mine.length === 0) return;
    const vms = this.c.vmDriver();
    const data = spaceDataLayout(mountpoint);
    const oldOf = new Map(Object.entries(from.workloadIds).map(([old, id]) => [id, old]));
    const networks = this.c.d.networks;
    if (networks) await networks.ensure(s);
    for (const w of mine) {
      const old = oldOf.get(w.id);
      if (old === undefined) continue;
      const [was, dir] = [join(data.vms, old), join(data.vms, w.id)];
      if (existsSync(was) && !existsSync(dir)) {
        // The archived space's definition (its ids, paths and uid) goes before the directory
        // takes the new id: a definition found under the new id is then always this space's.
        for (const f of ['domain.xml', 'domain.xml.started']) await rm(join(was, f), { force: true });
        await rename(was, dir);
      }
      await renameRecord(data.records, old, w.id);
      const a = await readRecord<BrokerArgs<'createVm'>>(data.records, w.id);
      if (!a) {
        this.c.d.logger.warn({ spaceId: s.id, id: w.id }, 'restored VM has no record; it is not defined again');
        continue;
      }
      if (await this.c.exists(() => vms.state(s.id, w.id))) continue;
      const address = networks
        ? this.c.d.workloads.assignAddress(w.id, networks.addresses(this.c.workloadIds(s).subnet, 'vm'))
        : null;
      const diskPath = a.diskBytes ? join(dir, 'disk.raw') : undefined;
      const bootPath = a.boot.kind === 'disk' ? join(dir, 'boot.img') : undefined;
      await vms.define(this.specOf(s, data, w.id, a, { bootPath, diskPath, address }));
    }
  }

  async view(s: SpaceRow, w: WorkloadRow): Promise<Vm> {
    const vms = this.c.vmDriver();
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
      ...(w.address !== null ? { network: vmNetwork(s.id, this.c.workloadIds(s).subnet, w.address).view } : {}),
      createdAt: new Date(w.createdAt).toISOString(),
    };
  }

  /** Idempotent against a domain already gone (a crash after libvirt lost it): the retry removes the record. */
  async remove(s: SpaceRow, name: string): Promise<Record<string, never>> {
    const w = this.c.d.workloads.get(s.id, 'vm', name);
    await this.tearDown(this.c.vmDriver(), s.id, w.id);
    await this.removeFiles(s, w.id);
    this.c.d.workloads.remove(w.id);
    await this.c.d.networks?.update(s.id);
    return {};
  }

  /** Destroys the domain at once and removes its definition; one already gone is what was wanted. */
  private async tearDown(vms: VmDriver, spaceId: string, id: string): Promise<void> {
    await vms.stop(spaceId, id, { graceSeconds: 0 }).catch((err: unknown) => this.c.ignoreGone(err));
    await vms.undefine(spaceId, id).catch((err: unknown) => this.c.ignoreGone(err));
  }

  /** The VM's disks, console and record in the space's storage. */
  private async removeFiles(s: SpaceRow, id: string): Promise<void> {
    const data = await this.c.data(s);
    await rm(join(data.vms, id), { recursive: true, force: true });
    await removeRecord(data.records, id);
  }

  /** ACPI shutdown of each VM, in parallel, destroyed after `graceSeconds`. */
  async stopForLock(s: SpaceRow, _storage: StorageState | undefined, graceSeconds: number): Promise<string[]> {
    const vms = this.c.d.vms;
    if (!vms) return [];
    const running: string[] = [];
    await Promise.all(
      this.c.d.workloads.list(s.id, 'vm').map(async (w) => {
        const state = await vms.state(s.id, w.id).catch(() => 'gone');
        if (state === 'running') running.push(w.id);
        await vms.stop(s.id, w.id, { graceSeconds }).catch((err: unknown) => this.c.ignoreGone(err));
      }),
    );
    return running;
  }

  /** Starts each VM again from its definition in the space. */
  async restore(s: SpaceRow, _mountpoint: string, running: readonly string[]): Promise<void> {
    const vms = this.c.d.vms;
    if (!vms) return;
    for (const id of running)
      await vms
        .start(s.id, id)
        .catch((err: unknown) => this.c.d.logger.warn({ err, spaceId: s.id, id }, 'VM not restored'));
  }

  async removeAll(spaceId: string): Promise<void> {
    await this.c.d.vms?.removeAllForSpace(spaceId);
  }

  /** libvirt is asked whatever the space's state; the files inside the space go only while it is open. */
  async undo(w: WorkloadRow, active: SpaceRow | undefined): Promise<boolean> {
    if (this.c.d.vms) await this.tearDown(this.c.d.vms, w.spaceId, w.id);
    if (active) await this.removeFiles(active, w.id);
    return true;
  }

  /** Domains of a gone space are removed with all of the space's; unknown ones of a live space one by one. */
  async removeOrphans(view: SpacesView): Promise<Orphans> {
    const orphans: Orphans = { workloads: [], spaces: [] };
    const vms = this.c.d.vms;
    if (!vms) return orphans;
    for (const [spaceId, ids] of await vms.listAllSpaces()) {
      if (!view.ours.has(spaceId)) continue;
      if (!view.live.has(spaceId)) {
        await vms.removeAllForSpace(spaceId);
        orphans.spaces.push(spaceId);
        continue;
      }
      for (const id of ids.filter((i) => !view.known.has(i))) {
        await this.tearDown(vms, spaceId, id);
        orphans.workloads.push(id);
      }
    }
    return orphans;
  }
}

/** A VM's NIC: on the space's bridge, its MAC made from its address (unique in the space). */
export function vmNetwork(spaceId: string, subnet: string, address: string) {
  const sub = spaceSubnet(subnet);
  const mac = `52:54:00:${address
    .split('.')
    .slice(1)
    .map((o) => Number(o).toString(16).padStart(2, '0'))
    .join(':')}`;
  const gateway = `${sub.gateway}/${sub.prefix}`;
  return {
    spec: { bridge: bridgeName(spaceId), mac, gateway },
    view: { address: `${address}/${sub.prefix}`, gateway: sub.gateway, mac },
  };
}
