/**
 * bench/forward: what a signed request to a space's own API costs over kept-alive connections.
 *
 * Every side is a process of its own, as in production: the benchmark (the client, signing with
 * Node's native Ed25519), the node daemon, the space process, and the baseline server.
 *
 * Ours: `GET {apiBase}/status` through the node daemon (TLS, token, authority and org checks),
 * forwarded over a kept-alive unix socket to the space process (token and RFC 9421 signature
 * verified again, replay cache in the space's own database), which asks the broker for the
 * space's budget. Baseline: a bare Koa route answering the same JSON over TLS with the same
 * certificate, on the same machine. Both driven by the SDK with the same number of requests in
 * flight, in alternating rounds of one run.
 *
 * Goals: requests per second ours / bare at least 0.4; p50 of one warm signed GET (one at a
 * time) at most 2 ms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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

/** Requests per second with `inFlight` callers each sending one after another for `seconds`. */
async function rate(call: () => Promise<unknown>, seconds: number, inFlight: number): Promise<number> {
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
  return n / (Number(process.hrtime.bigint() - t0) / 1e9);
}

const d = await startBenchDaemon('forward', { idleSeconds: 600 });
let bare: ChildProcess | undefined;
try {
  const owner = generatePrivateKey();
  const token = await d.token(['spaces', 'monitor']);
  const ours = new OcsClient({ url: d.url, ca: d.ca, token: () => token, ownerKey: owner, maxSockets: IN_FLIGHT });
  const { space } = await ours.spaces.reserve({
    resources: { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 32 * MiB },
    leaseSeconds: 3600,
  });
  const s = ours.space(space.id);
  const body = await s.status();

  // The baseline: the same answer from a bare Koa route in a process of its own, same certificate.
  bare = spawn(
    process.execPath,
    [
      fileURLToPath(new URL('./_bare-server.js', import.meta.url)),
      join(d.stateDir, 'tls', 'cert.pem'),
      join(d.stateDir, 'tls', 'key.pem'),
      JSON.stringify(body),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<string>((resolve, reject) => {
    bare!.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim()));
    bare!.once('exit', (c) => reject(new Error(`the bare server exited ${c}`)));
  });
  const plain = new BaseClient({ url: `https://127.0.0.1:${port}`, ca: d.ca, maxSockets: IN_FLIGHT });

  const signedGet = () => s.status();
  const bareGet = () => plain.call('GET', '/status');
  for (let i = 0; i < 200; i++) {
    await signedGet();
    await bareGet();
  }

  const latency: number[] = [];
  const bareLatency: number[] = [];
  for (let i = 0; i < LATENCY_N; i++) {
    let t0 = process.hrtime.bigint();
    await signedGet();
    latency.push(Number(process.hrtime.bigint() - t0) / 1e6);
    t0 = process.hrtime.bigint();
    await bareGet();
    bareLatency.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }

  const oursRps: number[] = [];
  const bareRps: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    oursRps.push(await rate(signedGet, SECONDS, IN_FLIGHT));
    bareRps.push(await rate(bareGet, SECONDS, IN_FLIGHT));
  }
  const o = percentile(oursRps, 50);
  const b = percentile(bareRps, 50);
  const p50 = percentile(latency, 50);
  report('forward', {
    'requests in flight': IN_FLIGHT,
    'signed GET through the daemon, req/s (median of rounds)': o,
    'bare Koa route, req/s': b,
    'ratio ours / bare': o / b,
    'warm signed GET p50 ms': p50,
    'warm signed GET p90 ms': percentile(latency, 90),
    'bare GET p50 ms': percentile(bareLatency, 50),
    'TLS connections opened (ours)': ours.connections,
    goal: `ratio >= ${GOAL_RATIO} and p50 <= ${GOAL_P50_MS} ms`,
    'goal met': o / b >= GOAL_RATIO && p50 <= GOAL_P50_MS,
  });
  await ours.spaces.destroy(space.id);
  ours.close();
  plain.close();
} finally {
  if (bare && bare.exitCode === null) {
    const exited = new Promise((r) => bare!.once('exit', r));
    bare.kill('SIGTERM');
    await exited;
  }
  await d.stop();
}
