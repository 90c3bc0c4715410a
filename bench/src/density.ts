/**
 * bench/density: what 200 idle spaces cost: the daemon's own memory plus everything it runs for
 * them (space processes, kernel objects: cgroups, loop devices, mounts), per space, measured as
 * the drop in MemAvailable after caches are dropped. Goal: at most 2 MiB per idle space.
 * Also the cold start of an idle space's first request, as a ratio to a warm request measured in
 * the same run.
 */
import { readFileSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { OcsClient } from '@ocs/client';
import { generatePrivateKey, type CreateSpaceResponse, type Ed25519PrivateKey } from '@ocs/protocol';
import { startBenchDaemon, type BenchDaemon } from './daemon.js';
import { percentile, report } from './measure.js';

const N = Number(process.env.BENCH_SPACES ?? 200);
const COLD = Math.min(20, N);
const MiB = 1024 ** 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Garbage-collects this process first (run with --expose-gc, as npm run bench does): its own heap is not the node's cost. */
function memAvailable(): number {
  (globalThis as { gc?: () => void }).gc?.();
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  return Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) * 1024;
}
/** /proc/meminfo in bytes, caches dropped first. */
function meminfo(): Map<string, number> {
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  const m = new Map<string, number>();
  for (const l of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const x = /^(\w+(?:\(\w+\))?):\s+(\d+) kB/.exec(l);
    if (x) m.set(x[1]!, Number(x[2]) * 1024);
  }
  return m;
}
function rss(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

let daemon: BenchDaemon | undefined;
try {
  const before = memAvailable();
  daemon = await startBenchDaemon('density', { idleSeconds: 2 });
  const { url, ca, runDir } = daemon;
  const token = await daemon.token(['spaces', 'monitor', 'farmer']);
  const client = (owner: Ed25519PrivateKey) => new OcsClient({ url, ca, token: () => token, ownerKey: owner });
  await sleep(500);
  const daemonIdle = rss(daemon.child.pid!);
  const afterStart = memAvailable();
  const ownStart = process.memoryUsage().rss;
  const infoStart = meminfo();

  const spaces: { id: string; apiBase: string; owner: Ed25519PrivateKey }[] = [];
  for (let i = 0; i < N; i++) {
    const owner = generatePrivateKey();
    const c = client(owner);
    const r = await c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      // 200 spaces must fit a 2-core, 24 GiB node: 10 millicores (the minimum) and 64 MiB each.
      resources: { cpuMillicores: 10, memoryBytes: 64 * MiB, storageBytes: 16 * MiB },
      leaseSeconds: 3600,
    });
    spaces.push({ id: r.body.space.id, apiBase: r.body.space.apiBase, owner });
    await c.call('GET', `${r.body.space.apiBase}/status`);
    // An idle space has no client connected: its connection is not the space's cost.
    c.close();
  }
  // Let every space process reach its idle timeout.
  const procs = () =>
    readdirSync(join(runDir, 'spaces')).filter((id) => existsSync(join(runDir, 'spaces', id, 'api.sock'))).length;
  for (let i = 0; i < 60 && procs() > 0; i++) await sleep(500);
  await sleep(1000);
  const leftRunning = procs();
  const daemonAfter = rss(daemon.child.pid!);
  const afterSpaces = memAvailable();
  // The benchmark's own growth (its clients' TLS contexts, keys) is not what a space costs.
  const ownGrowth = process.memoryUsage().rss - ownStart;
  const infoSpaces = meminfo();
  // Where it went, per space: the meminfo fields that grew most.
  const grew = [...infoSpaces]
    .filter(([k]) => !['MemFree', 'MemAvailable'].includes(k))
    .map(([k, v]) => [k, (v - (infoStart.get(k) ?? 0)) / N] as const)
    .filter(([, d]) => d > 64 * 1024)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, d]) => `${k} ${(d / 1024).toFixed(0)} KiB`)
    .join(', ');

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
    c.close();
  }
  const perSpace = (afterStart - afterSpaces - ownGrowth) / N;
  report('density', {
    'idle spaces': N,
    'space processes still running when idle': leftRunning,
    'daemon RSS at start MiB': daemonIdle / MiB,
    'daemon RSS with idle spaces MiB': daemonAfter / MiB,
    'daemon RSS per idle space KiB': (daemonAfter - daemonIdle) / N / 1024,
    'node memory per idle space MiB (MemAvailable)': perSpace / MiB,
    'daemon start cost MiB (MemAvailable)': (before - afterStart) / MiB,
    "the benchmark's own growth, not counted, MiB": ownGrowth / MiB,
    'grew most per space (meminfo)': grew,
    'cold first request p50 ms': percentile(cold, 50),
    'cold first request p99 ms': percentile(cold, 99),
    'warm request p50 ms': percentile(warm, 50),
    'ratio cold/warm (p50)': percentile(cold, 50) / percentile(warm, 50),
    goal: 'at most 2 MiB per idle space',
    'goal met': perSpace <= 2 * MiB,
  });
  for (const s of spaces) {
    const c = client(s.owner);
    await c.call('DELETE', `/v1/spaces/${s.id}`);
    c.close();
  }
} finally {
  await daemon?.stop();
}
