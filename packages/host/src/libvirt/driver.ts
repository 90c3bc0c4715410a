/**
 * The VM driver of the node daemon's privileged broker: {@link VmDriver} on top of a
 * {@link LibvirtConnection}. Every VM is the libvirt domain `ocs-<spaceId>-<vmId>`; the name
 * is built from checked ids, so an operation for one space can never reach another's domain.
 */
import { constants, existsSync } from 'node:fs';
import { mkdir, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { chooseAccelerator } from './accel.js';
import { grantKvm, revokeKvm } from './kvm-access.js';
import { openLibvirt, type LibvirtConnection, type RawState } from './connection.js';
import { checkTailBytes, readTail } from './console.js';
import { buildDomainXml } from './domain-xml.js';
import { KeyedLock } from '../keyed-lock.js';
import { checkSpaceId, domainName, parseDomainName } from './names.js';
import { ensurePartition } from './partition.js';
import { checkConsoleTarget, checkDirectory, checkRegularFile, diskFormat, type DiskFormat } from './paths.js';
import { stageBootFiles, stagedPaths, unstageBootFiles } from './staging.js';
import type { Accelerator, ConsoleTail, VmDriver, VmDriverOptions, VmSpec, VmState } from './types.js';
import { validateSpec } from './validate.js';
import { ensureSpaceBridge } from '../network/bridge.js';
import { readDomainFacts } from './xml-read.js';

/** Default of {@link VmDriverOptions.stagingDir}: tmpfs, so staged copies never reach a disk. */
export const DEFAULT_STAGING_DIR = '/run/ocs-vm-boot';
/** libvirt's per-domain state lives here, owned by its QEMU user and group. */
const LIBVIRT_QEMU_DIR = '/var/lib/libvirt/qemu';
/** libvirt writes each domain's QEMU command line (the owner's kernel command line) and stderr here. */
const LIBVIRT_QEMU_LOG_DIR = '/var/log/libvirt/qemu';
const DEFINITION = 'domain.xml';

async function readDefinition(file: string): Promise<string | undefined> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!fh) return undefined;
  try {
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Removes libvirt's log of a stopped domain: it holds the VM's command line in plain text. */
async function removeQemuLog(name: string): Promise<void> {
  await rm(join(LIBVIRT_QEMU_LOG_DIR, `${name}.log`), { force: true });
}
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
  /** Where the space's VM definitions live (`<dir>/<vmId>/domain.xml`); undefined = not reachable now. */
  vmsDir(spaceId: string): Promise<string | undefined>;
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

  /**
   * Writes the domain's definition into the space's own storage (`<vmsDir>/<vmId>/domain.xml`,
   * root 0600): libvirt never holds it, so nothing of the owner's VM (its kernel command line,
   * its files) is on the host's disk, and a locked space's VMs are unreadable with it.
   */
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
    const file = await this.definitionFile(spec.spaceId, spec.vmId);
    await this.lock.run(name, async () => {
      if ((await this.conn.state(name)) !== undefined || (await readDefinition(file)) !== undefined) {
        throw new OcsError('conflict', `VM ${spec.vmId} is already defined`, { vmId: spec.vmId });
      }
      await mkdir(dirname(file), { recursive: true, mode: 0o711 });
      const fh = await open(
        file,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        await fh.writeFile(xml);
      } finally {
        await fh.close();
      }
    });
  }

  async start(spaceId: string, vmId: string): Promise<void> {
    const name = domainName(spaceId, vmId);
    const file = await this.definitionFile(spaceId, vmId);
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw !== undefined && raw !== 'shutoff' && raw !== 'nostate' && raw !== 'crashed') return;
      const xml = await readDefinition(file);
      if (xml === undefined) throw notFound(vmId);
      // A crashed guest is kept (paused) until it is started again or stopped.
      if (raw === 'crashed') await this.destroyIfActive(name);
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
      // libvirt attaches the VM's tap to the bridge, which must exist (no container may have made it).
      if (md.bridge !== undefined && md.gateway !== undefined) await ensureSpaceBridge(md.bridge, md.gateway);
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
        await this.conn.createTransient(xml);
        await writeFile(`${file}.started`, '', { mode: 0o600 });
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
    const file = await this.definitionFile(spaceId, vmId).catch(() => undefined);
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw === undefined) {
        if (file === undefined || (await readDefinition(file)) === undefined) throw notFound(vmId);
        return;
      }
      if (grace > 0 && (raw === 'running' || raw === 'blocked' || raw === 'shutdown')) {
        // The power button: a guest that handles ACPI powers off; one that ignores it is destroyed below.
        await this.conn.shutdown(name).catch(() => undefined);
        for (const deadline = Date.now() + grace * 1000; Date.now() < deadline;) {
          const now = await this.conn.state(name);
          if (now === undefined || now === 'shutoff') break;
          await sleep(200);
        }
      }
      await this.destroyIfActive(name);
      await removeQemuLog(name);
    });
  }

  /** Destroys the domain unless it is (or just became) shut off or gone. */
  private async destroyIfActive(name: string): Promise<void> {
    if ((await this.conn.state(name)) === undefined) return;
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
    const file = await this.definitionFile(spaceId, vmId);
    await this.lock.run(name, async () => {
      const raw = await this.conn.state(name);
      if (raw !== undefined && raw !== 'shutoff')
        throw new OcsError('conflict', `VM ${vmId} is running; stop it first`, { vmId });
      const xml = await readDefinition(file);
      if (xml === undefined) throw notFound(vmId);
      await rm(file, { force: true });
      await rm(`${file}.started`, { force: true });
      await unstageBootFiles(this.settings.stagingDir, name);
      await removeQemuLog(name);
      const uid = this.accelerator === 'kvm' ? readDomainFacts(xml).runAsUid : undefined;
      if (uid !== undefined && !(await this.listAllSpaces()).has(spaceId)) await revokeKvm(uid);
    });
  }

  async state(spaceId: string, vmId: string): Promise<VmState> {
    const s = await this.stateOf(spaceId, vmId);
    if (s === undefined) throw notFound(vmId);
    return s;
  }

  /** Running (or crashed, kept) from libvirt; otherwise from the definition in the space. */
  private async stateOf(spaceId: string, vmId: string): Promise<VmState | undefined> {
    const raw = await this.conn.state(domainName(spaceId, vmId));
    if (raw !== undefined && raw !== 'shutoff' && raw !== 'nostate') return apiState(raw, undefined);
    const file = await this.definitionFile(spaceId, vmId).catch(() => undefined);
    if (file === undefined || !existsSync(file)) return undefined;
    return existsSync(`${file}.started`) ? 'shutoff' : 'defined';
  }

  /** Every space with a domain running here (transient domains exist only while they run). */
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

  /** Destroys every running VM of the space; its definitions go with the space's storage. Idempotent. */
  async removeAllForSpace(spaceId: string): Promise<void> {
    checkSpaceId(spaceId);
    const uids = new Set<number>();
    for (const vmId of (await this.listAllSpaces()).get(spaceId) ?? []) {
      const name = domainName(spaceId, vmId);
      await this.lock.run(name, async () => {
        const xml = await this.conn.xml(name);
        const uid = this.accelerator === 'kvm' && xml !== undefined ? readDomainFacts(xml).runAsUid : undefined;
        if (uid !== undefined) uids.add(uid);
        await this.destroyIfActive(name);
        await unstageBootFiles(this.settings.stagingDir, name);
        await removeQemuLog(name);
      });
    }
    const dir = await this.settings.vmsDir(spaceId).catch(() => undefined);
    if (dir !== undefined)
      for (const e of await readdir(dir).catch(() => [] as string[])) {
        if (!/^vm_[a-z0-9_]{1,40}$/.test(e)) continue;
        await rm(join(dir, e, DEFINITION), { force: true });
        await rm(join(dir, e, `${DEFINITION}.started`), { force: true });
        await removeQemuLog(domainName(spaceId, e));
      }
    for (const uid of uids) await revokeKvm(uid);
  }

  private async definitionFile(spaceId: string, vmId: string): Promise<string> {
    domainName(spaceId, vmId); // checks both ids
    const dir = await this.settings.vmsDir(spaceId);
    if (dir === undefined) throw notFound(vmId);
    return join(dir, vmId, DEFINITION);
  }

  async readConsole(spaceId: string, vmId: string, opts: { tailBytes: number }): Promise<ConsoleTail> {
    checkTailBytes(opts?.tailBytes);
    const xml = await this.dumpXml(spaceId, vmId);
    const path = readDomainFacts(xml).consolePath;
    if (path === undefined) throw new Error(`VM ${vmId} of ${spaceId} has no serial console file`);
    return readTail(path, opts.tailBytes);
  }

  /** The live XML of a running VM, else its definition (what readConsole reads the console's file from). */
  async dumpXml(spaceId: string, vmId: string): Promise<string> {
    const xml =
      (await this.conn.xml(domainName(spaceId, vmId))) ??
      (await readDefinition(await this.definitionFile(spaceId, vmId)));
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
export async function createVmDriver(opts: VmDriverOptions): Promise<LibvirtVmDriver> {
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
      vmsDir: opts.vmsDir,
      ...(qemuGid === undefined ? {} : { qemuGid }),
    });
  } catch (err) {
    await conn.close().catch(() => undefined);
    throw err;
  }
}
