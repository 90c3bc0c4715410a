/**
 * Run inside the production guest, not a test itself: more node daemons beside the one
 * guest-node-service.ts installs, each as the systemd unit we ship under a name of its own
 * (`ocs-node-<name>.service`), with its own config, state, run and storage directories, port,
 * pool (on a disk of its own), space uids, subordinate ids, subnets and ports: what lets several
 * daemons share one machine. Under cgroup v2 a daemon needs a delegated group of its own, which
 * is what the unit gives it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OcsClient } from '@ocs/client';
import type { Ed25519PrivateKey, Role } from '@ocs/protocol';
import { daemonClient } from './daemon-process.js';

const MiB = 1024 ** 2;

export const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 250 ms until it answers something, for at most `ms`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  ms = 120_000,
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(250);
  }
}

export interface GuestNode {
  client: OcsClient;
  url: string;
  unit: string;
  pool: string;
  disk: string;
  /** The unit's cgroup (v2, from the hierarchy's root). */
  cgroup: string;
  /** Where its spaces mount: `<storageRoot>/mnt/<id>`. */
  storageRoot: string;
}

export async function startGuestNode(o: {
  /** a-z, one or a few letters: names the unit, directories and pool. */
  name: string;
  disk: string;
  port: number;
  owner: Ed25519PrivateKey;
  roles: Role[];
  storageBytes: number;
  /** The node's own space uids (100 of them), subordinate ids, subnets and published ports. */
  ids: { uidBase: number; subidBase: number; subnetPool: string; ports: { first: number; last: number } };
  containers?: boolean;
}): Promise<GuestNode> {
  const pool = `ocs${o.name}`;
  const unit = `ocs-node-${o.name}.service`;
  const stateDir = `/var/lib/ocs-${o.name}`;
  const storageRoot = `/var/lib/ocs-storage-${o.name}`;
  const config = `/etc/ocs/node-${o.name}.json`;
  sh('zpool', 'create', '-f', '-O', 'mountpoint=none', pool, o.disk);
  mkdirSync('/etc/ocs', { recursive: true });
  writeFileSync(
    config,
    JSON.stringify({
      stateDir,
      runDir: `/run/ocs-${o.name}`,
      auth: { devIssuer: true },
      listen: { host: '127.0.0.1', port: o.port },
      storage: { backend: 'zfs', root: storageRoot, pool },
      capacity: {
        farmerReserve: { cpuMillicores: 0, memoryBytes: 256 * MiB, storageBytes: 0 },
        storageBytes: o.storageBytes,
      },
      cgroups: { daemon: { memoryBytes: 768 * MiB, pids: 2048 } },
      spaces: { uidBase: o.ids.uidBase, uidCount: 100 },
      workloads: {
        containers: o.containers
          ? { enabled: true, subidBase: o.ids.subidBase, subnetPool: o.ids.subnetPool }
          : { enabled: false },
        libvirt: { enabled: false },
        network: { ports: o.ids.ports },
      },
    }),
  );
  const unitText = readFileSync('packaging/systemd/ocs-node.service', 'utf8')
    .replace('OCS_CONFIG=/etc/ocs/node.json', `OCS_CONFIG=${config}`)
    .replace(/^StateDirectory=ocs$/m, `StateDirectory=ocs-${o.name}`)
    .replace(/^RuntimeDirectory=ocs$/m, `RuntimeDirectory=ocs-${o.name}`);
  writeFileSync(`/etc/systemd/system/${unit}`, unitText);
  mkdirSync(`/etc/systemd/system/${unit}.d`, { recursive: true });
  // The clone stands where a release would be unpacked (/opt/ocs).
  writeFileSync(`/etc/systemd/system/${unit}.d/home.conf`, `[Service]\nEnvironment=OCS_HOME=${process.cwd()}\n`);
  sh('systemctl', 'daemon-reload');
  sh('systemctl', 'start', unit);
  await until(`${unit}'s state directory`, () => (existsSync(join(stateDir, 'tls', 'cert.pem')) ? true : undefined));
  const url = `https://127.0.0.1:${o.port}`;
  const client = await until(`${unit} to answer`, async () => {
    const c = daemonClient(stateDir, { url }, { roles: o.roles, org: 'dev', owner: o.owner });
    await c.node.health();
    return c;
  });
  return { client, url, unit, pool, disk: o.disk, cgroup: `/system.slice/${unit}`, storageRoot };
}
