/**
 * The real daemon as a child process (`ocs-node start`), for tests that kill it with SIGKILL
 * and start it again on the same state: its directory, names and config file of the run's own
 * (removed again by those names), its URL from the banner, and a client whose tokens its own
 * development issuer mints.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createStorageDriver, detectCgroups } from '@ocs/host';
import { OcsClient } from '@ocs/client';
import { generatePrivateKey, mintToken, type Ed25519PrivateKey, type Role } from '@ocs/protocol';

const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));

/**
 * The directory and names of one daemon of this run, as a config file names them: its state,
 * run and storage directories under `dir`, its cgroup parent `ocs-<name>-<tag>.slice`.
 */
export interface DaemonDir {
  tag: string;
  /** `ocs-<name>-<tag>-…` in the temporary directory, 0711: space processes reach their sockets there. */
  dir: string;
  /** The cgroup parent, `ocs-<name>-<tag>.slice`. */
  parent: string;
  /** What every such config says: the directories under `dir`, fscrypt storage, the cgroup parent, loopback on any free port. */
  base: {
    stateDir: string;
    runDir: string;
    listen: { host: string; port: number };
    storage: { backend: 'fscrypt'; root: string };
    cgroups: { parent: string };
  };
  /** This run's uid base in the range from `first`: a slot of 1000 uids chosen by the tag. */
  uidBase(first: number): number;
  /**
   * A whole node's config on `base`: its development issuer on (the test mints its tokens), no
   * farmer reserve, 1000 space uids from `uidBase(uidFirst)` checked against this host's
   * accounts but never recorded in its /etc/subuid (a test leaves the host as it was), warnings
   * only in its log, no libvirt, and containers only with `containersRunRoot`.
   */
  nodeConfig(o: {
    uidFirst: number;
    storageBytes: number;
    containersRunRoot?: string;
    idleSeconds?: number;
    /** Containers' subordinate ids and subnets, and the ports spaces publish on: a node's own, beside another daemon's. */
    network?: { subidBase: number; subnetPool: string; ports: { first: number; last: number } };
  }): DaemonDir['base'] & Record<string, unknown>;
  /** Writes `config` as JSON to `dir/<file>`; its path. */
  write(config: unknown, file?: string): string;
  /**
   * Removes what a daemon on this directory made, by its names: the cgroups under the parent
   * (their processes with them) and the parent, every space's storage under the root, the directory.
   */
  remove(): Promise<void>;
}

export function daemonDir(name: string): DaemonDir {
  const tag = randomBytes(4).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), `ocs-${name}-${tag}-`));
  // Space processes run as their own uids and must be able to reach their socket directory.
  chmodSync(dir, 0o711);
  const parent = `ocs-${name}-${tag}.slice`;
  const uidBase = (first: number) => first + (parseInt(tag, 16) % 1000) * 1000;
  const base = {
    stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'),
    listen: { host: '127.0.0.1', port: 0 },
    storage: { backend: 'fscrypt' as const, root: join(dir, 'storage') },
    cgroups: { parent },
  };
  return {
    tag,
    dir,
    parent,
    base,
    uidBase,
    nodeConfig: (o) => ({
      ...base,
      capacity: { farmerReserve: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 }, storageBytes: o.storageBytes },
      spaces: {
        uidBase: uidBase(o.uidFirst),
        uidCount: 1000,
        reserveIds: false,
        ...(o.idleSeconds === undefined ? {} : { idleSeconds: o.idleSeconds }),
      },
      log: { level: 'warn' },
      workloads: {
        containers:
          o.containersRunRoot === undefined
            ? { enabled: false }
            : {
                enabled: true,
                runRoot: o.containersRunRoot,
                idleSeconds: 30,
                ...(o.network ? { subidBase: o.network.subidBase, subnetPool: o.network.subnetPool } : {}),
              },
        libvirt: { enabled: false },
        ...(o.network ? { network: { ports: o.network.ports } } : {}),
      },
      auth: { devIssuer: true },
    }),
    write(config, file = 'config.json') {
      const path = join(dir, file);
      writeFileSync(path, JSON.stringify(config));
      return path;
    },
    async remove() {
      const cgroups = await detectCgroups();
      for (const c of await cgroups.children(parent).catch(() => [] as string[]))
        await cgroups.destroy(`${parent}/${c}`);
      await cgroups.destroy(parent).catch(() => undefined);
      const storage = await createStorageDriver(base.storage);
      for (const id of await storage.list().catch(() => [] as string[]))
        await storage.destroy(id).catch(() => undefined);
      await storage.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Daemon {
  child: ChildProcess;
  url: string;
}

/**
 * `prefix`: a command the daemon runs under (e.g. setpriv), which execs it in the same process;
 * `env`: more of its environment (e.g. `OCS_FAILPOINTS`).
 */
export function startDaemon(
  configPath: string,
  timeoutMs = 30_000,
  o: { prefix?: string[]; env?: Record<string, string> } = {},
): Promise<Daemon> {
  const argv = [process.execPath, MAIN, 'start', '--config', configPath];
  const [cmd, ...args] = [...(o.prefix ?? []), ...argv] as [string, ...string[]];
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`daemon not up: ${out}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /url:\s+(\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]! });
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
      // For debugging a test: the daemons' own log (warnings and errors) on the test's stderr.
      if (process.env.OCS_E2E_DAEMON_LOG) process.stderr.write(d);
    });
    child.once('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited ${c}: ${out}`));
    });
  });
}

export function kill9(d: Daemon): Promise<void> {
  return new Promise((resolve) => {
    if (d.child.exitCode !== null || d.child.signalCode !== null) return resolve();
    d.child.once('exit', () => resolve());
    d.child.kill('SIGKILL');
  });
}

/** A client of the daemon at `d.url`, with tokens of `org` carrying `roles`, signing as `owner`. */
export function daemonClient(
  stateDir: string,
  d: Pick<Daemon, 'url'>,
  opts: { roles: Role[]; org: string; owner?: Ed25519PrivateKey },
): OcsClient {
  const nodeId = readFileSync(join(stateDir, 'node-id'), 'utf8').trim();
  const key = createPrivateKey(readFileSync(join(stateDir, 'keys', 'dev-issuer.pem'), 'utf8'));
  const x = (key.export({ format: 'jwk' }) as { x: string }).x;
  const token = () =>
    mintToken({
      privateKey: key,
      kid: `dev-${x.slice(0, 12)}`,
      alg: 'EdDSA',
      issuer: `ocs-dev:${nodeId}`,
      audience: nodeId,
      subject: 'crash',
      org: opts.org,
      roles: opts.roles,
    });
  const ca = new X509Certificate(readFileSync(join(stateDir, 'tls', 'cert.pem'))).toString();
  return new OcsClient({ url: d.url, ca, token, ownerKey: opts.owner ?? generatePrivateKey() });
}
