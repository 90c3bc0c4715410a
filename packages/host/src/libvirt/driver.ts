/**
 * The VM driver of the node daemon's privileged broker: {@link VmDriver} on top of a
 * {@link LibvirtConnection}. Every VM is the libvirt domain `ocs-<spaceId>-<vmId>`; the name
 * is built from checked ids, so an operation for one space can never reach another's domain.
 */
import { stat } from 'node:fs/promises';
import { OcsError } from '@ocs/protocol';
import { chooseAccelerator } from './accel.js';
import { grantKvm, revokeKvm } from './kvm-access.js';
import { NoSuchDomain, openLibvirt, type LibvirtConnection, type RawState } from './connection.js';
import { checkTailBytes, readTail } from './console.js';
import { buildDomainXml } from './domain-xml.js';
import { KeyedLock } from './keyed-lock.js';
import { checkSpaceId, domainName, parseDomainName } from './names.js';
import { ensurePartition } from './partition.js';
import { checkConsoleTarget, checkDirectory, checkRegularFile, diskFormat, type DiskFormat } from './paths.js';
import { stageBootFiles, stagedPaths, unstageBootFiles } from './staging.js';
import type { Accelerator, ConsoleTail, VmDriver, VmDriverOptions, VmListEntry, VmSpec, VmState } from './types.js';
import { validateSpec } from './validate.js';
import { readDomainFacts } from './xml-read.js';

/** Default of {@link VmDriverOptions.stagingDir}: tmpfs, so staged copies never reach a disk. */
export const DEFAULT_STAGING_DIR = '/run/ocs-vm-boot';
/** libvirt's per-domain state lives here, owned by its QEMU user and group. */
const LIBVIRT_QEMU_DIR = '/var/lib/libvirt/qemu';
const DEFAULT_GRACE_SECONDS = 30;
const MAX_GRACE_SECONDS = 3600;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function notFound(vmId: string): OcsError {
  return new OcsError('not_found', `no VM ${vmId} in this space`, { vmId });
}

/** libvirt state (+ shut-off reason) → the API's state. */
export function apiState(raw: RawState, reason: string | undefined): VmState {
  switch (raw) {
    case 'running':
    case 'blocked':
    case 'shutdown': // shutting down, still running
      return 'running';
    case 'paused':
    case 'pmsuspended':
      return 'paused';
    case 'crashed':
      return 'crashed';
    case 'nostate':
    case 'shutoff':
      if (reason === 'unknown') return 'defined';
      return reason === 'crashed' ? 'crashed' : 'shutoff';
  }
}

/** Settings of one {@link LibvirtVmDriver}. */
export interface DriverSettings {
  accelerator: Accelerator;
  acceleratorReason: string;
  stagingDir: string;
  /** libvirt's QEMU group, needed for `runAsUid`; undefined when unknown. */
  qemuGid?: number;
}

/** {@link VmDriver} over a libvirt connection. */
export class LibvirtVmDriver implements VmDriver {
  readonly accelerator: Accelerator;
  readonly acceleratorReason: string;
  private readonly lock = new KeyedLock();

  constructor(
    private readonly conn: LibvirtConnection,
    private readonly settings: DriverSettings,
  ) {
    this.accelerator = settings.accelerator;
    this.acceleratorReason = settings.acceleratorReason;
  }

  async define(spec: VmSpec): Promise<void> {
    validateSpec(spec);
    if (spec.runAsUid !== undefined && this.settings.qemuGid === undefined) {
      throw new OcsError('unavailable', "runAsUid needs libvirt's QEMU group, which was not found");
    }
    const disks = await checkSpecFiles(spec);
    const name = domainName(spec.spaceId, spec.vmId);
    const staged = stagedPaths(this.settings.stagingDir, name);
    const xml = buildDomainXml({
      spec,
      accelerator: this.accelerator,
      disks,
      ...(spec.boot.kind === 'kernel'
        ? {
            staged:
              spec.boot.initrd === undefined
                ? { kernel: staged.kernel }
                : { kernel: staged.kernel, initrd: staged.initrd },
          }
        : {}),
      ...(this.settings.qemuGid === undefined ? {} : { qemuGid: this.settings.qemuGid }),
    });
    await this.lock.run(name, async () => {
      if ((await this.conn.state(name)) !== undefined) {
        throw new OcsError('conflict', `VM ${spec.vmId} is already defined`, { vmId: spec.vmId });
      }
      await this.conn.define(xml);
    });
  }

  async start(spaceId: string, vmId: string): Promise<void> {
    const name = domainName(spaceId, vmId);
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw === undefined) throw notFound(vmId);
      if (raw !== 'shutoff' && raw !== 'nostate') return;
      const xml = await this.conn.xml(name, { inactive: true });
      if (xml === undefined) throw notFound(vmId);
      const facts = readDomainFacts(xml);
      const md = facts.metadata;
      if (!md || md.space !== spaceId || md.vm !== vmId) throw new Error(`domain ${name} has no matching OCS metadata`);
      // The spec was checked at define; the files may have changed since. Boot files are
      // copied through an exact open below; the others are checked again here.
      const root = md.storageRoot;
      for (const p of [...facts.diskPaths, ...(facts.consolePath === undefined ? [] : [facts.consolePath])]) {
        if (root !== undefined && !p.startsWith(`${root}/`))
          throw new Error(`domain ${name} uses a path outside its storage root`);
      }
      for (const disk of facts.diskPaths) await checkRegularFile('diskPath', disk);
      if (facts.consolePath !== undefined) await checkConsoleTarget(facts.consolePath);
      if (facts.partition !== undefined) await ensurePartition(facts.partition);
      // QEMU runs as the space's uid, which is not in the kvm group: give that uid alone the device.
      if (facts.type === 'kvm' && facts.runAsUid !== undefined) await grantKvm(facts.runAsUid);
      try {
        if (md.kernel !== undefined) {
          await stageBootFiles(
            this.settings.stagingDir,
            name,
            md.initrd === undefined ? { kernel: md.kernel } : { kernel: md.kernel, initrd: md.initrd },
          );
        }
        await this.conn.start(name);
      } finally {
        await unstageBootFiles(this.settings.stagingDir, name);
      }
    });
  }

  async stop(spaceId: string, vmId: string, opts: { graceSeconds?: number } = {}): Promise<void> {
    const name = domainName(spaceId, vmId);
    const grace = opts.graceSeconds ?? DEFAULT_GRACE_SECONDS;
    if (!Number.isSafeInteger(grace) || grace < 0 || grace > MAX_GRACE_SECONDS) {
      throw new OcsError('invalid_request', `graceSeconds must be an integer from 0 to ${MAX_GRACE_SECONDS}`, {
        field: 'graceSeconds',
      });
    }
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw === undefined) throw notFound(vmId);
      if (raw === 'shutoff') return;
      if (grace > 0 && (raw === 'running' || raw === 'blocked' || raw === 'shutdown')) {
        // The power button: a guest that handles ACPI powers off; one that ignores it is destroyed below.
        await this.conn.shutdown(name).catch(() => undefined);
        for (const deadline = Date.now() + grace * 1000; Date.now() < deadline;) {
          if ((await this.conn.state(name)) === 'shutoff') return;
          await sleep(200);
        }
      }
      await this.destroyIfActive(name);
    });
  }

  /** Destroys the domain unless it is (or just became) shut off or gone. */
  private async destroyIfActive(name: string): Promise<void> {
    try {
      await this.conn.destroy(name);
    } catch (err) {
      const now = await this.conn.state(name);
      if (now === undefined || now === 'shutoff') return;
      throw err;
    }
  }

  async undefine(spaceId: string, vmId: string): Promise<void> {
    const name = domainName(spaceId, vmId);
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw === undefined) throw notFound(vmId);
      // libvirt would undefine a running domain and leave it running as a transient one.
      if (raw !== 'shutoff') throw new OcsError('conflict', `VM ${vmId} is running; stop it first`, { vmId });
      const uid = await this.runAsUidOf(name);
      await this.conn.undefine(name);
      await unstageBootFiles(this.settings.stagingDir, name);
      if (uid !== undefined && !(await this.listAllSpaces()).has(spaceId)) await revokeKvm(uid);
    });
  }

  /** The uid the domain's QEMU runs as, when the domain is a KVM one (only those get a grant). */
  private async runAsUidOf(name: string): Promise<number | undefined> {
    if (this.accelerator !== 'kvm') return undefined;
    const xml = await this.conn.xml(name, { inactive: true });
    return xml === undefined ? undefined : readDomainFacts(xml).runAsUid;
  }

  async state(spaceId: string, vmId: string): Promise<VmState> {
    const name = domainName(spaceId, vmId);
    const s = await this.stateOf(name);
    if (s === undefined) throw notFound(vmId);
    return s;
  }

  private async stateOf(name: string): Promise<VmState | undefined> {
    const raw = await this.conn.state(name);
    if (raw === undefined) return undefined;
    const reason = raw === 'shutoff' || raw === 'nostate' ? await this.conn.shutoffReason(name) : undefined;
    return apiState(raw, reason);
  }

  async list(spaceId: string): Promise<VmListEntry[]> {
    checkSpaceId(spaceId);
    const vmIds = (await this.listAllSpaces()).get(spaceId) ?? [];
    const out: VmListEntry[] = [];
    for (const vmId of vmIds) {
      const state = await this.stateOf(domainName(spaceId, vmId));
      if (state !== undefined) out.push({ vmId, state }); // undefined: removed meanwhile
    }
    return out;
  }

  async listAllSpaces(): Promise<Map<string, string[]>> {
    const bySpace = new Map<string, string[]>();
    for (const name of await this.conn.listDomainNames()) {
      const ids = parseDomainName(name);
      if (!ids) continue; // not one of ours
      bySpace.set(ids.spaceId, [...(bySpace.get(ids.spaceId) ?? []), ids.vmId]);
    }
    for (const vms of bySpace.values()) vms.sort();
    return new Map([...bySpace.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  async removeAllForSpace(spaceId: string): Promise<void> {
    checkSpaceId(spaceId);
    const uids = new Set<number>();
    for (const vmId of (await this.listAllSpaces()).get(spaceId) ?? []) {
      const name = domainName(spaceId, vmId);
      await this.lock.run(name, async () => {
        const raw = await this.conn.state(name);
        if (raw === undefined) return;
        const uid = await this.runAsUidOf(name);
        if (uid !== undefined) uids.add(uid);
        if (raw !== 'shutoff') await this.destroyIfActive(name);
        try {
          await this.conn.undefine(name);
        } catch (err) {
          if (!(err instanceof NoSuchDomain) && (await this.conn.state(name)) !== undefined) throw err;
        }
        await unstageBootFiles(this.settings.stagingDir, name);
      });
    }
    for (const uid of uids) await revokeKvm(uid);
  }

  async readConsole(spaceId: string, vmId: string, opts: { tailBytes: number }): Promise<ConsoleTail> {
    const name = domainName(spaceId, vmId);
    checkTailBytes(opts?.tailBytes);
    const xml = await this.conn.xml(name);
    if (xml === undefined) throw notFound(vmId);
    const path = readDomainFacts(xml).consolePath;
    if (path === undefined) throw new Error(`domain ${name} has no serial console file`);
    return readTail(path, opts.tailBytes);
  }

  async dumpXml(spaceId: string, vmId: string): Promise<string> {
    const xml = await this.conn.xml(domainName(spaceId, vmId));
    if (xml === undefined) throw notFound(vmId);
    return xml;
  }

  close(): Promise<void> {
    return this.conn.close();
  }
}

/** Checks every file of a valid spec on disk; returns the disks to attach with their formats. */
async function checkSpecFiles(spec: VmSpec): Promise<{ path: string; format: DiskFormat }[]> {
  if (spec.storageRoot !== undefined) await checkDirectory('storageRoot', spec.storageRoot);
  const disks: { path: string; format: DiskFormat }[] = [];
  if (spec.boot.kind === 'kernel') {
    await checkRegularFile('boot.kernel', spec.boot.kernel);
    if (spec.boot.initrd !== undefined) await checkRegularFile('boot.initrd', spec.boot.initrd);
  } else {
    disks.push({ path: spec.boot.disk, format: await diskFormat('boot.disk', spec.boot.disk) });
  }
  if (spec.diskPath !== undefined)
    disks.push({ path: spec.diskPath, format: await diskFormat('diskPath', spec.diskPath) });
  await checkConsoleTarget(spec.consoleLogPath);
  return disks;
}

/**
 * Connects to libvirt (default `qemu:///system`) and picks the accelerator (see accel.ts: the
 * guest kernel must boot under KVM, or `accelerator` forces one). Requires root: it is meant
 * for the broker only.
 */
export async function createVmDriver(opts: VmDriverOptions = {}): Promise<VmDriver> {
  const conn = await openLibvirt(opts.uri ?? 'qemu:///system');
  try {
    const accel = await chooseAccelerator({
      setting: opts.accelerator ?? 'auto',
      ...(opts.probeKernel === undefined ? {} : { kernel: opts.probeKernel }),
      ...(opts.verdictFile === undefined ? {} : { verdictFile: opts.verdictFile }),
    });
    const qemuGid = await stat(LIBVIRT_QEMU_DIR).then(
      (s) => s.gid,
      () => undefined,
    );
    return new LibvirtVmDriver(conn, {
      accelerator: accel.accelerator,
      acceleratorReason: accel.reason,
      stagingDir: opts.stagingDir ?? DEFAULT_STAGING_DIR,
      ...(qemuGid === undefined ? {} : { qemuGid }),
    });
  } catch (err) {
    await conn.close().catch(() => undefined);
    throw err;
  }
}
