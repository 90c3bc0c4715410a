/**
 * bench/container: start-to-running of one container through the space API (a signed
 * `POST {apiBase}/containers`, which answers once the container is running) versus plain
 * `docker run -d` of the same image with the same command and the same limits (it returns once
 * the container is started), measured alternately in one run (A, B, A, B, ...).
 * Goal: ratio ours / docker run (p50) at most 1.3; printed, never enforced.
 *
 * Extra figures, so a reader sees where the difference goes:
 * - one signed `GET {apiBase}/status` to a warm space process: the fixed per-request overhead;
 * - the time spent inside the container driver's calls while the broker serves our create;
 * - a like-for-like `docker run -d` (C, in the same alternation): what our containers are asked
 *   to be, given by hand, on an internal user-defined network like a space's own, with
 *   docker-init, no capabilities, no-new-privileges, private IPC and cgroup namespaces
 *   (not the cgroup parent: that would leave cgroup directories behind, and costs nothing).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildBusyboxImage } from '@ocs/host/testing';
import { generatePrivateKey, type Container, type CreateSpaceResponse } from '@ocs/protocol';
import { startTestNode, MiB } from '@ocs/e2e/harness';
import { percentile, report } from './measure.js';
import { DOCKER_HARDENED, podmanBaseline } from './podman-baseline.js';

const N = Number(process.env.BENCH_CONTAINERS ?? 15);
const WARMUP = 2;
const STATUS_N = 50;
const GOAL = 1.0;
const COMMAND = ['sleep', '600'];
// The same limits on every side: 250 millicores = 0.25 CPUs, 64 MiB without swap, 64 pids.
const LIMITS = { cpuMillicores: 250, memoryBytes: 64 * MiB, pids: 64 };
const DOCKER_LIMITS = ['--memory', '64m', '--memory-swap', '64m', '--cpus', '0.25', '--pids-limit', '64'];
const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
const docker = (args: string[]) =>
  execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
function quietly(what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    console.error(`could not remove ${what}: ${String(err)}`);
  }
}

const run = randomBytes(5).toString('hex');
const tag = `ocs-bench-tmp/busybox-${run}:latest`;
let imageDir: string | undefined;
let tagLoaded = false;
let networkId: string | undefined;
/** Baseline containers not yet removed, by their id. */
const baselineIds = new Set<string>();
const { pod, remove: podmanRemove, runFlags: podmanFlags, cleanup: cleanupPodman } = podmanBaseline();

const t = await startTestNode({
  workloads: true,
  total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
});
try {
  const path = await buildBusyboxImage(tag);
  imageDir = dirname(path);
  const imageTar = readFileSync(path);

  // The space: room for one container at a time.
  const owner = generatePrivateKey();
  const reserved = await t.client({ roles: ['spaces'], owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources: { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB, pids: 256 },
    leaseSeconds: 3600,
  });
  const base = reserved.body.space.apiBase;
  const api = t.client({ roles: ['containers', 'storage', 'monitor'], owner });
  await api.call('POST', `${base}/images/busybox`, undefined, { raw: imageTar });

  // The baselines' image: the same tarball, loaded under the tag it carries.
  docker(['load', '-q', '-i', path]);
  tagLoaded = true;
  networkId = docker(['network', 'create', '--internal', '--label', `ocs-bench=${run}`, `ocs-bench-${run}`]);

  // Time spent in the container driver while the broker serves our create (the broker calls the
  // driver object the harness handed it, so wrapping its methods here sees every call).
  // The space's own engine's driver: SpaceEngines hands the broker this same object.
  const driver = await t.containers!.driver(await t.engineSpace(reserved.body.space.id));
  const driverMs = { create: 0, start: 0, inspect: 0 };
  const steps = Object.keys(driverMs) as (keyof typeof driverMs)[];
  for (const k of steps) {
    const fn = driver[k] as (...a: unknown[]) => Promise<unknown>;
    (driver as unknown as Record<string, unknown>)[k] = async (...a: unknown[]) => {
      const t0 = process.hrtime.bigint();
      try {
        return await fn.apply(driver, a);
      } finally {
        driverMs[k] += ms(t0, process.hrtime.bigint());
      }
    };
  }
  const inDriver: Record<keyof typeof driverMs | 'total', number[]> = {
    create: [],
    start: [],
    inspect: [],
    total: [],
  };

  let seq = 0;
  async function ours(record: boolean): Promise<number> {
    const name = `c${seq++}`;
    for (const k of steps) driverMs[k] = 0;
    const t0 = process.hrtime.bigint();
    const r = await api
      .call<Container>('POST', `${base}/containers`, { name, image: 'busybox', command: COMMAND, ...LIMITS })
      .catch((err: unknown) => {
        // Another node daemon started with the same engines' run root removes every space it has
        // no record of (the workloads' reconcile), ours included: say so rather than leave a bare
        // not_found.
        throw new Error(
          `creating ${name} failed (is another node daemon or e2e run using this run root?): ${String(err)}`,
          { cause: err },
        );
      });
    const t1 = process.hrtime.bigint();
    if (r.body.state !== 'running') throw new Error(`container ${name} is ${r.body.state}, not running`);
    if (record) {
      for (const k of steps) inDriver[k].push(driverMs[k]);
      inDriver.total.push(steps.reduce((s, k) => s + driverMs[k], 0));
    }
    await api.call('DELETE', `${base}/containers/${name}`);
    return ms(t0, t1);
  }

  function dockerRun(extra: string[]): number {
    const t0 = process.hrtime.bigint();
    const id = docker(['run', '-d', '--rm=false', ...DOCKER_LIMITS, ...extra, tag, ...COMMAND]);
    const t1 = process.hrtime.bigint();
    if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`docker run printed ${JSON.stringify(id)}, not a container id`);
    baselineIds.add(id);
    if (docker(['inspect', '-f', '{{.State.Running}}', id]) !== 'true') throw new Error(`${id} is not running`);
    docker(['rm', '-f', id]);
    baselineIds.delete(id);
    return ms(t0, t1);
  }
  const plain = () => dockerRun([]);
  const alike = () => dockerRun([...DOCKER_HARDENED, '--network', networkId!]);
  // The chosen engine's own CLI: podman run -d on a store of its own, same image, limits and
  // hardening, the same id map as a space's (its own user namespace), no network.
  pod(['load', '-q', '-i', path]);
  function podmanRun(): number {
    const t0 = process.hrtime.bigint();
    const id = pod(['run', '-d', ...DOCKER_LIMITS, ...podmanFlags, tag, ...COMMAND]);
    const t1 = process.hrtime.bigint();
    if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`podman run printed ${JSON.stringify(id)}, not a container id`);
    podmanRemove(id);
    return ms(t0, t1);
  }

  for (let i = 0; i < WARMUP; i++) {
    await ours(false);
    plain();
    alike();
    podmanRun();
  }
  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  const p: number[] = [];
  for (let i = 0; i < N; i++) {
    a.push(await ours(true));
    b.push(plain());
    c.push(alike());
    p.push(podmanRun());
  }

  // The fixed cost of one signed request to a warm space process.
  const status: number[] = [];
  for (let i = 0; i < 5; i++) await api.call('GET', `${base}/status`);
  for (let i = 0; i < STATUS_N; i++) {
    const t0 = process.hrtime.bigint();
    await api.call('GET', `${base}/status`);
    status.push(ms(t0, process.hrtime.bigint()));
  }

  const ratio = percentile(a, 50) / percentile(b, 50);
  report('container', {
    'containers per side': N,
    'docker run -d p50 ms': percentile(b, 50),
    'docker run -d p90 ms': percentile(b, 90),
    'space API create -> running p50 ms': percentile(a, 50),
    'space API create -> running p90 ms': percentile(a, 90),
    'ratio ours / docker run (p50)': ratio,
    'signed GET status (warm) p50 ms': percentile(status, 50),
    'signed GET status (warm) p90 ms': percentile(status, 90),
    'in container driver during create p50 ms': percentile(inDriver.total, 50),
    'driver create p50 ms': percentile(inDriver.create, 50),
    'driver start p50 ms': percentile(inDriver.start, 50),
    'driver inspect p50 ms': percentile(inDriver.inspect, 50),
    'docker run -d hardened, internal net p50 ms': percentile(c, 50),
    'docker run -d hardened, internal net p90 ms': percentile(c, 90),
    'ratio ours / hardened docker run (p50)': percentile(a, 50) / percentile(c, 50),
    'podman run -d (own CLI, user namespace) p50 ms': percentile(p, 50),
    'ratio ours / podman run (p50)': percentile(a, 50) / percentile(p, 50),
    goal: `ratio ours / docker run (p50) <= ${GOAL}`,
    'goal met': ratio <= GOAL,
  });
} finally {
  // Only what this run made, by id or tag.
  for (const id of baselineIds) quietly(`container ${id}`, () => docker(['rm', '-f', id]));
  if (networkId) quietly(`network ${networkId}`, () => docker(['network', 'rm', networkId!]));
  await t.stop();
  if (tagLoaded) quietly(`image ${tag}`, () => docker(['rmi', tag]));
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
  // The baseline's store is this run's own directory: its containers, images and mounts only.
  cleanupPodman();
}
