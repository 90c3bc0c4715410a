/**
 * The one module that calls the libvirt binding (`@unraid/libvirt`), behind {@link
 * LibvirtConnection} so the binding can be swapped. Domains are addressed by name only; no
 * binding object leaves this file.
 *
 * Used from the binding: Hypervisor.connectOpen/connectClose, connectListAllDomains,
 * domainLookupByName, domainCreateXML (transient domains only: libvirt keeps no definition, which
 * would hold the owner's kernel command line in /etc/libvirt), and on a Domain: getName,
 * shutdown, destroy, getInfo (state), getXMLDesc. The binding has no
 * virDomainGetState, so the reason of a shut-off state (never started / shut down / crashed)
 * comes from `virsh domstate --reason` (spawned without a shell) — see {@link shutoffReason}.
 * Its errors carry no libvirt error code (always -1), so "no such domain" is decided by
 * listing names, never by matching message text.
 */
import { spawn } from 'node:child_process';
import { DomainGetXMLDescFlags, DomainState, Hypervisor, type Domain } from '@unraid/libvirt';

/** A domain's state as libvirt reports it. */
export type RawState =
  'nostate' | 'running' | 'blocked' | 'paused' | 'shutdown' | 'shutoff' | 'crashed' | 'pmsuspended';

/** The libvirt operations the driver uses. Every method with a name returns undefined or throws {@link NoSuchDomain} when it is not there. */
export interface LibvirtConnection {
  readonly uri: string;
  listDomainNames(): Promise<string[]>;
  /** Creates and starts a transient domain from XML: libvirt keeps no definition of it. */
  createTransient(xml: string): Promise<void>;
  /** Asks the guest to power off (ACPI power button). */
  shutdown(name: string): Promise<void>;
  /** Kills the domain's QEMU at once. */
  destroy(name: string): Promise<void>;
  state(name: string): Promise<RawState | undefined>;
  /** Why a shut-off domain is off: libvirt's reason word (`unknown` = never started), or undefined when unknown. */
  shutoffReason(name: string): Promise<string | undefined>;
  /** The running domain's live XML. */
  xml(name: string): Promise<string | undefined>;
  close(): Promise<void>;
}

/** Thrown by operations on a domain that does not exist. */
export class NoSuchDomain extends Error {
  constructor(name: string) {
    super(`no libvirt domain named ${name}`);
    this.name = 'NoSuchDomain';
  }
}

const STATES: Record<number, RawState> = {
  [DomainState.NOSTATE]: 'nostate',
  [DomainState.RUNNING]: 'running',
  [DomainState.BLOCKED]: 'blocked',
  [DomainState.PAUSED]: 'paused',
  [DomainState.SHUTDOWN]: 'shutdown',
  [DomainState.SHUTOFF]: 'shutoff',
  [DomainState.CRASHED]: 'crashed',
  [DomainState.PMSUSPENDED]: 'pmsuspended',
};

class UnraidConnection implements LibvirtConnection {
  constructor(
    readonly uri: string,
    private readonly hv: Hypervisor,
  ) {}

  async listDomainNames(): Promise<string[]> {
    const domains = await this.hv.connectListAllDomains();
    return Promise.all(domains.map((d) => d.getName()));
  }

  /** The binding's Domain, or undefined when no domain has that name. */
  private async lookup(name: string): Promise<Domain | undefined> {
    try {
      return await this.hv.domainLookupByName(name);
    } catch (err) {
      if (!(await this.listDomainNames()).includes(name)) return undefined;
      throw err;
    }
  }

  private async must(name: string): Promise<Domain> {
    const d = await this.lookup(name);
    if (!d) throw new NoSuchDomain(name);
    return d;
  }

  async createTransient(xml: string): Promise<void> {
    await this.hv.domainCreateXML(xml);
  }

  async shutdown(name: string): Promise<void> {
    await (await this.must(name)).shutdown();
  }

  async destroy(name: string): Promise<void> {
    await (await this.must(name)).destroy();
  }

  async state(name: string): Promise<RawState | undefined> {
    const d = await this.lookup(name);
    if (!d) return undefined;
    try {
      return STATES[(await d.getInfo()).state] ?? 'nostate';
    } catch (err) {
      // A transient domain ends (and is gone) the moment its guest powers off.
      if (!(await this.listDomainNames()).includes(name)) return undefined;
      throw err;
    }
  }

  shutoffReason(name: string): Promise<string | undefined> {
    return shutoffReason(this.uri, name);
  }

  async xml(name: string): Promise<string | undefined> {
    const d = await this.lookup(name);
    if (!d) return undefined;
    try {
      return await d.getXMLDesc(DomainGetXMLDescFlags.NONE);
    } catch (err) {
      if (!(await this.listDomainNames()).includes(name)) return undefined;
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.hv.connectClose();
  }
}

/** Opens a connection through `@unraid/libvirt`. */
export async function openLibvirt(uri: string): Promise<LibvirtConnection> {
  let hv: Hypervisor;
  try {
    hv = new Hypervisor({ uri });
  } catch (err) {
    // The native addon loads here; it is missing when the package was installed without libvirt-dev.
    throw new Error(`the libvirt binding could not be loaded: ${(err as Error).message}`);
  }
  await hv.connectOpen();
  return new UnraidConnection(uri, hv);
}

/**
 * `virsh -c <uri> domstate --reason <name>` → the reason word of a shut-off domain, e.g.
 * "shut off (destroyed)" → `destroyed`; `unknown` for a domain never started. Undefined when
 * the output is something else. LC_ALL=C keeps virsh's words untranslated.
 */
export function shutoffReason(uri: string, name: string, timeoutMs = 10_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn('virsh', ['-c', uri, '-q', 'domstate', '--reason', '--', name], {
      env: { ...process.env, LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: timeoutMs,
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => {
      const m = /^shut off \(([a-z ]+)\)$/.exec(out.trim());
      resolve(code === 0 && m?.[1] !== undefined ? m[1] : undefined);
    });
  });
}
