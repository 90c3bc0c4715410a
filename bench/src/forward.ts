/**
 * bench/forward: what a signed request to a space's own API costs over kept-alive connections.
 *
 * Every side is a process of its own, as in production: the benchmark (the client, signing with
 * Node's native Ed25519), the node daemon, the space process, and the baseline servers.
 *
 * Ours: `GET {apiBase}/status` through the node daemon (TLS, token, authority and org checks),
 * forwarded over a kept-alive unix socket to the space process (token and RFC 9421 signature
 * verified again, replay cache in the space's own database), which asks the broker for the
 * space's budget. Baseline: a bare Koa route answering the same JSON over TLS with the same
 * certificate, on the same machine. All driven by the SDK with the same number of requests in
 * flight, in alternating rounds of one run.
 *
 * Goals: requests per second ours / bare at least 0.4; p50 of one warm signed GET (one at a
 * time) at most 2 ms.
 *
 * To say where the gap lies, two more figures from the same run: the same three-process
 * topology built from bare Koa apps (TLS front → unix-socket back → unix-socket broker, none of
 * our checks), and the CPU each process spends per request, read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BaseClient, OcsClient } from '@ocs/client';
import { generatePrivateKey } from '@ocs/protocol';
import { startBenchDaemon } from './daemon.js';
import { percentile, report } from './measure.js';

const MiB = 1024 ** 2;

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 8);
const LATENCY_N = 500;
const GOAL_RATIO = 0.4;
const GOAL_P50_MS = 2;
const BARE = fileURLToPath(new URL('./_bare-server.js', import.meta.url));

/** Requests per second with `inFlight` callers each sending one after another for `seconds`. */
async function rate(call: () => Promise<unknown>, seconds: number, inFlight: number) {
  let n = 0;
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (Date.now() < end) {
        await call();
        n++;
      }
    }),
  );
  return { n, rps: n / (Number(process.hrtime.bigint() - t0) / 1e9) };
}

/** User + system CPU of a process so far, in ms (/proc/PID/stat counts 10 ms clock ticks). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** The space process of this run's daemon: the node process whose config lies in our run dir. */
function spaceProcessPid(runDir: string): number {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv[0]?.endsWith('/node') && argv.some((a) => a.startsWith(runDir) && a.endsWith('/config.json')))
      return Number(e);
  }
  throw new Error('the space process was not found');
}

/** Spawns a baseline role; resolves with its first line (a port or `ready`). */
function role(args: string[]): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, [BARE, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', (b: Buffer) => resolve({ child, line: b.toString().trim() }));
    child.once('exit', (c) => reject(new Error(`baseline ${args[0]} exited ${c}`)));
  });
}

const d = await startBenchDaemon('forward', { idleSeconds: 600 });
const baselines: ChildProcess[] = [];
const sockDir = mkdtempSync(join(tmpdir(), 'ocs-forward-bare-'));
try {
  const owner = generatePrivateKey();
  const token = await d.token(['spaces', 'monitor']);
  const ours = new OcsClient({ url: d.url, ca: d.ca, token: () => token, ownerKey: owner, maxSockets: IN_FLIGHT });
  const { space } = await ours.spaces.reserve({
    resources: { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 32 * MiB },
    leaseSeconds: 3600,
  });
  const s = ours.space(space.id);
  const body = JSON.stringify(await s.status());
  const cert = join(d.stateDir, 'tls', 'cert.pem');
  const key = join(d.stateDir, 'tls', 'key.pem');

  // The baselines, same certificate: one bare route, and our topology with bare apps.
  const route = await role(['route', cert, key, body]);
  const broker = await role(['broker', join(sockDir, 'broker.sock'), body]);
  const back = await role(['back', join(sockDir, 'back.sock'), join(sockDir, 'broker.sock')]);
  const front = await role(['front', cert, key, join(sockDir, 'back.sock')]);
  baselines.push(route.child, broker.child, back.child, front.child);
  const plain = new BaseClient({ url: `https://127.0.0.1:${route.line}`, ca: d.ca, maxSockets: IN_FLIGHT });
  const hops = new BaseClient({ url: `https://127.0.0.1:${front.line}`, ca: d.ca, maxSockets: IN_FLIGHT });

  const signedGet = () => s.status();
  const bareGet = () => plain.call('GET', '/status');
  const hopsGet = () => hops.call('GET', '/status');
  for (let i = 0; i < 200; i++) {
    await signedGet();
    await bareGet();
    await hopsGet();
  }

  const latency: number[] = [];
  const bareLatency: number[] = [];
  const hopsLatency: number[] = [];
  const time = async (call: () => Promise<unknown>, into: number[]) => {
    const t0 = process.hrtime.bigint();
    await call();
    into.push(Number(process.hrtime.bigint() - t0) / 1e6);
  };
  for (let i = 0; i < LATENCY_N; i++) {
    await time(signedGet, latency);
    await time(bareGet, bareLatency);
    await time(hopsGet, hopsLatency);
  }

  // CPU per request of each of our processes, over our rounds only.
  const procs = { client: process.pid, daemon: d.child.pid!, 'space process': spaceProcessPid(d.runDir) };
  const cpu = Object.fromEntries(Object.keys(procs).map((k) => [k, 0])) as Record<keyof typeof procs, number>;
  let served = 0;
  const oursRps: number[] = [];
  const bareRps: number[] = [];
  const hopsRps: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const before = Object.entries(procs).map(([k, pid]) => [k, cpuMs(pid)] as const);
    const o = await rate(signedGet, SECONDS, IN_FLIGHT);
    for (const [k, ms] of before) cpu[k as keyof typeof procs] += cpuMs(procs[k as keyof typeof procs]) - ms;
    served += o.n;
    oursRps.push(o.rps);
    bareRps.push((await rate(bareGet, SECONDS, IN_FLIGHT)).rps);
    hopsRps.push((await rate(hopsGet, SECONDS, IN_FLIGHT)).rps);
  }
  const o = percentile(oursRps, 50);
  const b = percentile(bareRps, 50);
  const h = percentile(hopsRps, 50);
  const p50 = percentile(latency, 50);
  const perRequest = (ms: number) => (ms * 1000) / served;
  report('forward', {
    'requests in flight': IN_FLIGHT,
    'signed GET through the daemon, req/s (median of rounds)': o,
    'bare Koa route, req/s': b,
    'ratio ours / bare': o / b,
    'bare apps in our topology (3 processes), req/s': h,
    'ratio ours / bare topology': o / h,
    // The ceiling for any implementation of this topology on this machine.
    'ratio bare topology / bare route': h / b,
    'warm signed GET p50 ms': p50,
    'warm signed GET p90 ms': percentile(latency, 90),
    'bare GET p50 ms': percentile(bareLatency, 50),
    'bare topology GET p50 ms': percentile(hopsLatency, 50),
    'CPU µs per signed GET, client': perRequest(cpu.client),
    'CPU µs per signed GET, daemon': perRequest(cpu.daemon),
    'CPU µs per signed GET, space process': perRequest(cpu['space process']),
    'TLS connections opened (ours)': ours.connections,
    goal: `ratio >= ${GOAL_RATIO} and p50 <= ${GOAL_P50_MS} ms`,
    'goal met': o / b >= GOAL_RATIO && p50 <= GOAL_P50_MS,
  });
  await ours.spaces.destroy(space.id);
  ours.close();
  plain.close();
  hops.close();
} finally {
  await Promise.all(
    baselines
      .filter((c) => c.exitCode === null)
      .map((c) => {
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGTERM');
        return exited;
      }),
  );
  rmSync(sockDir, { recursive: true, force: true });
  await d.stop();
}
