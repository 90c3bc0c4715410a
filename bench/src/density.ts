/**
 * bench/density: what 200 idle spaces cost: the daemon's own memory plus everything it runs for
 * them (space processes, kernel objects: cgroups, loop devices, mounts), per space, measured as
 * the drop in MemAvailable after caches are dropped. Goal: at most 2 MiB per idle space.
 * Also the cold start of an idle space's first request, as a ratio to a warm request measured in
 * the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createPrivateKey, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { OcsClient } from '@ocs/client';
import { detectCgroups, createStorageDriver } from '@ocs/host';
import { generatePrivateKey, mintToken, type CreateSpaceResponse, type Ed25519PrivateKey } from '@ocs/protocol';
import { percentile, report } from './measure.js';

const N = Number(process.env.BENCH_SPACES ?? 200);
const COLD = Math.min(20, N);
const MiB = 1024 ** 2;
const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function memAvailable(): number {
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  return Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) * 1024;
}
function rss(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

const tag = randomBytes(4).toString('hex');
const dir = mkdtempSync(join(tmpdir(), `ocs-density-${tag}-`));
chmodSync(dir, 0o711);
const parent = `ocs-density-${tag}.slice`;
const config = {
  stateDir: join(dir, 'state'),
  runDir: join(dir, 'run'),
  listen: { host: '127.0.0.1', port: 0 },
  storage: { backend: 'fscrypt', root: join(dir, 'storage') },
  cgroups: { parent },
  capacity: { farmerReserve: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 }, storageBytes: 64 * 1024 * MiB },
  spaces: { uidBase: 500_000 + (parseInt(tag, 16) % 1000) * 1000, uidCount: 1000, idleSeconds: 2 },
  log: { level: 'warn' },
  // No workloads: the benchmark measures spaces, and leaves no host firewall rule behind.
  workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
  // A config file must say so: this node's own dev issuer mints the benchmark's tokens.
  auth: { devIssuer: true },
};
writeFileSync(join(dir, 'config.json'), JSON.stringify(config));

let daemon: ChildProcess | undefined;
try {
  const before = memAvailable();
  daemon = spawn(process.execPath, [MAIN, 'start', '--config', join(dir, 'config.json')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    daemon!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /url:\s+(\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    daemon!.once('exit', (c) => reject(new Error(`daemon exited ${c}`)));
  });
  const nodeId = readFileSync(join(config.stateDir, 'node-id'), 'utf8').trim();
  const issuerKey = createPrivateKey(readFileSync(join(config.stateDir, 'keys', 'dev-issuer.pem'), 'utf8'));
  const x = (issuerKey.export({ format: 'jwk' }) as { x: string }).x;
  const token = await mintToken({
    privateKey: issuerKey,
    kid: `dev-${x.slice(0, 12)}`,
    alg: 'EdDSA',
    issuer: `ocs-dev:${nodeId}`,
    audience: nodeId,
    subject: 'bench',
    org: 'bench',
    roles: ['spaces', 'monitor', 'farmer'],
    lifetimeSeconds: 900,
  });
  const ca = new X509Certificate(readFileSync(join(config.stateDir, 'tls', 'cert.pem'))).toString();
  const client = (owner: Ed25519PrivateKey) => new OcsClient({ url, ca, token: () => token, ownerKey: owner });
  await sleep(500);
  const daemonIdle = rss(daemon.pid!);
  const afterStart = memAvailable();

  const spaces: { id: string; apiBase: string; owner: Ed25519PrivateKey }[] = [];
  for (let i = 0; i < N; i++) {
    const owner = generatePrivateKey();
    const r = await client(owner).call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      // 200 spaces must fit a 2-core, 24 GiB node: 10 millicores (the minimum) and 64 MiB each.
      resources: { cpuMillicores: 10, memoryBytes: 64 * MiB, storageBytes: 16 * MiB },
      leaseSeconds: 3600,
    });
    spaces.push({ id: r.body.space.id, apiBase: r.body.space.apiBase, owner });
    await client(owner).call('GET', `${r.body.space.apiBase}/status`);
  }
  // Let every space process reach its idle timeout.
  const procs = () =>
    readdirSync(join(config.runDir, 'spaces')).filter((id) => existsSync(join(config.runDir, 'spaces', id, 'api.sock')))
      .length;
  for (let i = 0; i < 60 && procs() > 0; i++) await sleep(500);
  await sleep(1000);
  const leftRunning = procs();
  const daemonAfter = rss(daemon.pid!);
  const afterSpaces = memAvailable();

  const cold: number[] = [];
  const warm: number[] = [];
  for (const s of spaces.slice(0, COLD)) {
    const c = client(s.owner);
    const t0 = process.hrtime.bigint();
    await c.call('GET', `${s.apiBase}/status`);
    const t1 = process.hrtime.bigint();
    await c.call('GET', `${s.apiBase}/status`);
    const t2 = process.hrtime.bigint();
    cold.push(Number(t1 - t0) / 1e6);
    warm.push(Number(t2 - t1) / 1e6);
  }
  const perSpace = (afterStart - afterSpaces) / N;
  report('density', {
    'idle spaces': N,
    'space processes still running when idle': leftRunning,
    'daemon RSS at start MiB': daemonIdle / MiB,
    'daemon RSS with idle spaces MiB': daemonAfter / MiB,
    'daemon RSS per idle space KiB': (daemonAfter - daemonIdle) / N / 1024,
    'node memory per idle space MiB (MemAvailable)': perSpace / MiB,
    'daemon start cost MiB (MemAvailable)': (before - afterStart) / MiB,
    'cold first request p50 ms': percentile(cold, 50),
    'cold first request p99 ms': percentile(cold, 99),
    'warm request p50 ms': percentile(warm, 50),
    'ratio cold/warm (p50)': percentile(cold, 50) / percentile(warm, 50),
    goal: 'at most 2 MiB per idle space',
    'goal met': perSpace <= 2 * MiB,
  });
  for (const s of spaces) await client(s.owner).call('DELETE', `/v1/spaces/${s.id}`);
} finally {
  if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
    const exited = new Promise((r) => daemon!.once('exit', r));
    daemon.kill('SIGTERM');
    await exited;
  }
  // Whatever a failed run left: this run's own spaces, cgroups and files, by id.
  const storage = await createStorageDriver(config.storage as { backend: 'fscrypt'; root: string });
  for (const id of await storage.list().catch(() => [] as string[])) await storage.destroy(id).catch(() => undefined);
  await storage.close();
  const cgroups = await detectCgroups();
  for (const c of await cgroups.children(parent).catch(() => [] as string[])) await cgroups.destroy(`${parent}/${c}`);
  await cgroups.destroy(parent).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
