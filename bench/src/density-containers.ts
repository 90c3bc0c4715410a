/**
 * bench/density-containers: what a space with one running container costs, against the same
 * container run by hand with podman's own CLI (same image, command, limits, hardening and id map,
 * no network), in one run.
 *
 * Ours: N spaces, each with one container started through its space API, then left alone until
 * every space process and every engine has gone idle (a node whose tenants run containers but are
 * not calling their API): what stays is each container, its conmon, and the process holding the
 * engine's mount namespace. By hand: N `podman run -d`, each in a store of its own, as a space's
 * is (containers of one store share their image's page cache; tenants of separate encrypted
 * stores cannot, and must not).
 *
 * Measured, per container:
 * - the proportional set size (Pss) of its processes: private pages plus a share of those mapped
 *   with others. The goal's figure: a space's container costs at most 2 MiB (the idle-space
 *   budget) more than the same container run by hand;
 * - the memory charged to the cgroups that hold it (ours: the space's workloads group; by hand:
 *   its store's cgroup parent) after caches are dropped. Ours is larger by design: a space's
 *   engine writes its image's layers inside the space's group, so their page cache counts against
 *   the space's memory; by hand the CLI that loads the image runs in the root group.
 * What no cgroup is charged for (the space's loop device, mount, bridge) is in bench/density's
 * per-space figure.
 */
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildBusyboxImage, engineServiceRunning } from '@ocs/host/testing';
import { generatePrivateKey, type Container, type CreateSpaceResponse } from '@ocs/protocol';
import { spaceCgroupLayout } from '@ocs/node-daemon';
import { startTestNode, waitFor, MiB } from '@ocs/e2e/harness';
import { report } from './measure.js';
import { podmanBaseline, type PodmanBaseline } from './podman-baseline.js';

const N = Number(process.env.BENCH_SPACES ?? 20);
const GOAL_MIB = 2;
const COMMAND = ['sleep', '3600'];
const LIMITS = { cpuMillicores: 100, memoryBytes: 64 * MiB, pids: 64 };
const PODMAN_LIMITS = ['--memory', '64m', '--memory-swap', '64m', '--cpus', '0.1', '--pids-limit', '64'];

function dropCaches(): void {
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}
/** Pids whose memory cgroup is `group` or below it, read from /proc (v1 or v2 lines). */
function processesIn(group: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let lines: string;
    try {
      lines = readFileSync(`/proc/${d}/cgroup`, 'utf8');
    } catch {
      continue; // gone
    }
    const path = /^\d+:(?:[^:\n]*,)?memory(?:,[^:\n]*)?:(.*)$/m.exec(lines)?.[1] ?? /^0::(.*)$/m.exec(lines)?.[1];
    if (path === `/${group}` || path?.startsWith(`/${group}/`)) out.push(Number(d));
  }
  return out;
}
/** E.g. `catatonit 1, conmon 1, sleep 2`. */
function census(pids: number[]): string {
  const n = new Map<string, number>();
  for (const p of pids) n.set(comm(p), (n.get(comm(p)) ?? 0) + 1);
  return [...n]
    .sort()
    .map(([c, k]) => `${c} ${k}`)
    .join(', ');
}
const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
/** Proportional set size: a process's private pages plus its share of the pages it maps with others. */
const pss = (pids: number[]) =>
  pids.reduce(
    (sum, p) => sum + Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))![1]) * 1024,
    0,
  );

const tag = `ocs-bench-tmp/busybox-${randomBytes(5).toString('hex')}:latest`;
const baselines: PodmanBaseline[] = [];
let imageDir: string | undefined;
const t = await startTestNode({
  workloads: true,
  idleSeconds: 2,
  engineIdleSeconds: 2,
  total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
});
const charged = async (group: string) => {
  dropCaches();
  return (await t.cgroups.usage(group)).memoryBytes;
};
try {
  const path = await buildBusyboxImage(tag);
  imageDir = dirname(path);
  const imageTar = readFileSync(path);

  // By hand: N containers, a store each.
  const hand = { charged: 0, pss: 0, census: '' };
  for (let i = 0; i < N; i++) {
    const b = podmanBaseline(`${process.pid}-${i}`);
    baselines.push(b);
    b.pod(['load', '-q', '-i', path]);
    b.pod(['run', '-d', ...PODMAN_LIMITS, ...b.runFlags, tag, ...COMMAND]);
  }
  for (const b of baselines) {
    if (b.pod(['ps', '-q']).split('\n').filter(Boolean).length !== 1)
      throw new Error('a hand-run container is not running');
    hand.charged += (await charged(b.cgroupParent)) / N;
    hand.pss += pss(processesIn(b.cgroupParent)) / N;
  }
  hand.census = census(processesIn(baselines[0]!.cgroupParent));
  for (const b of baselines) b.stop();
  for (const b of baselines.splice(0)) b.cleanup();

  // Ours: N spaces, one container each, then idle.
  const spaces: string[] = [];
  for (let i = 0; i < N; i++) {
    const owner = generatePrivateKey();
    const r = await t.client({ roles: ['spaces'], owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 64 * MiB, pids: 128 },
      leaseSeconds: 3600,
    });
    const base = r.body.space.apiBase;
    const api = t.client({ roles: ['containers', 'storage'], owner });
    await api.call('POST', `${base}/images/busybox`, undefined, { raw: imageTar });
    const c = await api.call<Container>('POST', `${base}/containers`, {
      name: 'c',
      image: 'busybox',
      command: COMMAND,
      ...LIMITS,
    });
    if (c.body.state !== 'running') throw new Error(`space ${i}'s container is ${c.body.state}`);
    spaces.push(r.body.space.id);
  }
  const layout = (id: string) => spaceCgroupLayout(t.config.cgroups.parent, id);
  await waitFor(
    'every engine to go idle',
    async () =>
      (await Promise.all(spaces.map((id) => engineServiceRunning(t.cgroups, layout(id).engine)))).some(Boolean)
        ? undefined
        : true,
    60_000,
  );
  await waitFor(
    'every space process to go idle',
    async () => (spaces.some((id) => existsSync(join(t.config.runDir, 'spaces', id, 'api.sock'))) ? undefined : true),
    60_000,
  );
  let oursCharged = 0;
  let oursPss = 0;
  for (const id of spaces) {
    oursCharged += await charged(layout(id).workloads);
    oursPss += pss(processesIn(layout(id).workloads));
  }
  const ours1 = { charged: oursCharged / N, pss: oursPss / N };
  const left = processesIn(layout(spaces[0]!).space);

  report('density-containers', {
    spaces: N,
    'processes per space once idle': census(left),
    'processes of a container run by hand': hand.census,
    'Pss per space with one container MiB': ours1.pss / MiB,
    'Pss per container run by hand MiB': hand.pss / MiB,
    'ratio Pss ours / by hand': ours1.pss / hand.pss,
    'Pss overhead per space MiB': (ours1.pss - hand.pss) / MiB,
    'charged to the space per container MiB': ours1.charged / MiB,
    'charged to the cgroup by hand MiB': hand.charged / MiB,
    goal: `Pss at most ${GOAL_MIB} MiB more per space than the container run by hand`,
    'goal met': ours1.pss - hand.pss <= GOAL_MIB * MiB,
  });
} finally {
  await t.stop();
  for (const b of baselines) b.stop();
  for (const b of baselines) b.cleanup();
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
}
