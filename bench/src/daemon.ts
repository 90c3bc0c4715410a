/**
 * A node daemon of the benchmark's own, as the separate process it is in production
 * (`ocs-node start` with a config file): its own state, run and storage directories and cgroup
 * parent, the development issuer on (the benchmark mints its tokens), no workloads unless asked.
 * `stop()` ends it and removes whatever it made, by this run's own ids.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { detectCgroups, createStorageDriver } from '@ocs/host';
import { devIssuer, mintToken, type Role } from '@ocs/protocol';

const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));
const MiB = 1024 ** 2;

export interface BenchDaemon {
  child: ChildProcess;
  url: string;
  ca: string;
  stateDir: string;
  runDir: string;
  token(roles: Role[], lifetimeSeconds?: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startBenchDaemon(
  name: string,
  o: { idleSeconds?: number; storageBytes?: number } = {},
): Promise<BenchDaemon> {
  const tag = randomBytes(4).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), `ocs-${name}-${tag}-`));
  chmodSync(dir, 0o711);
  const parent = `ocs-${name}-${tag}.slice`;
  const config = {
    stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'),
    listen: { host: '127.0.0.1', port: 0 },
    storage: { backend: 'fscrypt', root: join(dir, 'storage') },
    cgroups: { parent },
    capacity: {
      farmerReserve: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 },
      storageBytes: o.storageBytes ?? 64 * 1024 * MiB,
    },
    spaces: {
      uidBase: 500_000 + (parseInt(tag, 16) % 1000) * 1000,
      uidCount: 1000,
      idleSeconds: o.idleSeconds ?? 60,
      reserveIds: false,
    },
    log: { level: 'warn' },
    // No workloads: no host firewall rule or engine is left behind.
    workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
    // A config file must say so: this node's own dev issuer mints the benchmark's tokens.
    auth: { devIssuer: true },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const child = spawn(process.execPath, [MAIN, 'start', '--config', join(dir, 'config.json')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    const storage = await createStorageDriver(config.storage as { backend: 'fscrypt'; root: string });
    for (const id of await storage.list().catch(() => [] as string[])) await storage.destroy(id).catch(() => undefined);
    await storage.close();
    const cgroups = await detectCgroups();
    for (const c of await cgroups.children(parent).catch(() => [] as string[])) await cgroups.destroy(`${parent}/${c}`);
    await cgroups.destroy(parent).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  let url: string;
  try {
    url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /url:\s+(\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (c) => reject(new Error(`daemon exited ${c}`)));
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const nodeId = readFileSync(join(config.stateDir, devIssuer.nodeIdFile), 'utf8').trim();
  const issuerKey = createPrivateKey(readFileSync(join(config.stateDir, devIssuer.keyFile), 'utf8'));
  const x = String(createPublicKey(issuerKey).export({ format: 'jwk' }).x);
  return {
    child,
    url,
    ca: new X509Certificate(readFileSync(join(config.stateDir, 'tls', 'cert.pem'))).toString(),
    stateDir: config.stateDir,
    runDir: config.runDir,
    token: (roles, lifetimeSeconds = 900) =>
      mintToken({
        privateKey: issuerKey,
        kid: devIssuer.kid(x),
        alg: 'EdDSA',
        issuer: devIssuer.name(nodeId),
        audience: nodeId,
        subject: 'bench',
        org: 'bench',
        roles,
        lifetimeSeconds,
      }),
    stop: cleanup,
  };
}
