/**
 * bench/engines: the two ways to give each space a container engine whose store lives in the
 * space, measured in one run on the same image and command:
 *
 * - podman per space (what the node runs): `SpaceEngines`, the API service on demand, conmon per
 *   container;
 * - a dockerd per space: `--data-root` and `--exec-root` of its own, its own containerd, no
 *   iptables or bridge.
 *
 * Reported: memory of the idle engine (RSS of its processes), memory added by one running
 * container (engine processes + shim/conmon; the container's own process excluded), container
 * start (create + start until running, p50 of alternating runs), and stop-everything time (what
 * a lock waits for). The figures back the choice in docs/architecture.md.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { SpaceEngines, detectCgroups, type EngineSpace } from '@ocs/host';
import { buildBusyboxImage } from '@ocs/host/testing';
import { percentile, report } from './measure.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const MiB = 1024 ** 2;
const tag = `${process.pid}`;
const work = `/var/lib/ocs-bench-engines-${tag}`;
const cgroups = await detectCgroups();
const parent = `ocs-bench-eng-${tag}`;
const bridge = `ocsbe${tag}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function rssOf(pids: number[]): number {
  let sum = 0;
  for (const p of pids) {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8').toString());
    if (m) sum += Number(m[1]) * 1024;
  }
  return sum;
}

/** Every process whose ancestry leads to `root` (inclusive). */
function tree(root: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, 'utf8'))![1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]);
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const k of kids.get(p) ?? []) walk(k);
  };
  walk(root);
  return out;
}

const imagePath = await buildBusyboxImage(`ocs-bench-tmp/busybox-${tag}:latest`);
mkdirSync(work, { recursive: true, mode: 0o700 });
const results: Record<string, number | string> = {};
let dockerd: ChildProcess | undefined;
const engines = new SpaceEngines({ runRoot: `/run/ocs-be${tag}`, cgroups, idleSeconds: 600 });
const space: EngineSpace = {
  spaceId: 'sp_benchengines',
  dataDir: join(work, 'podman'),
  idMap: { base: 1_990_000_000, size: 65536 },
  subnet: '10.251.0.0/26',
  engineGroup: `${parent}/sp_benchengines.space/workloads.slice/engine`,
  containersGroup: `${parent}/sp_benchengines.space/workloads.slice/containers`,
};
try {
  // ---- podman per space ----------------------------------------------------------------------
  const driver = await engines.driver(space);
  await driver.loadImage(space.spaceId, 'busybox', createReadStream(imagePath));
  const enginePids = async () => cgroups.processes(space.engineGroup);
  await sleep(500);
  results['podman: idle engine (service + namespace anchor) MiB'] = rssOf(await enginePids()) / MiB;
  // After idleSeconds the service exits: what is left is the namespace's anchor (sleep).
  results['podman: after its idle exit (anchor only) MiB'] =
    rssOf((await enginePids()).filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('sleep'))) / MiB;
  const parentPath = cgroups.absolutePath(space.containersGroup);
  let n = 0;
  const spec = () => ({
    spaceId: space.spaceId,
    containerId: `ctr_bench${n++}`,
    name: `c${n}`,
    image: 'busybox',
    command: ['sleep', '600'],
    cpuMillicores: 500,
    memoryBytes: 64 * MiB,
    pids: 64,
    cgroupParent: parentPath,
    mounts: [],
    capAdd: [],
  });
  const podmanStart = async () => {
    const s = spec();
    const t0 = process.hrtime.bigint();
    await driver.create(s);
    await driver.start(s.spaceId, s.containerId);
    const took = ms(t0);
    return { took, id: s.containerId };
  };
  // ---- dockerd per space ---------------------------------------------------------------------
  const droot = join(work, 'dockerd');
  const dsock = `/run/ocs-bd${tag}.sock`;
  execFileSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
  mkdirSync(droot, { recursive: true });
  dockerd = spawn(
    'dockerd',
    [
      '--data-root',
      join(droot, 'data'),
      '--exec-root',
      `/run/ocs-bd${tag}`,
      '--pidfile',
      `/run/ocs-bd${tag}.pid`,
      '--host',
      `unix://${dsock}`,
      '--containerd-namespace',
      `ocs-bench-${tag}`,
      '--iptables=false',
      '--ip-masq=false',
      // A bridge of its own: `--bridge=none` would delete the host dockerd's docker0.
      '--bridge',
      bridge,
      '--exec-opt',
      'native.cgroupdriver=cgroupfs',
      '--default-ulimit',
      'nofile=1024:1024',
    ],
    { stdio: 'ignore' },
  );
  const dk = new Dockerode({ socketPath: dsock, version: 'v1.41' });
  for (let i = 0; ; i++) {
    if (
      existsSync(dsock) &&
      (await dk.ping().then(
        () => true,
        () => false,
      ))
    )
      break;
    if (i > 300) throw new Error('the per-space dockerd did not start');
    await sleep(100);
  }
  await dk.loadImage(createReadStream(imagePath)).then(
    (s) =>
      new Promise((r) => {
        s.on('end', r);
        s.resume();
      }),
  );
  const dImage = (await dk.listImages())[0]!.Id;
  await sleep(2000);
  results['dockerd: idle engine (dockerd + containerd) MiB'] = rssOf(tree(dockerd.pid!)) / MiB;
  const dockerStart = async () => {
    const t0 = process.hrtime.bigint();
    const c = await dk.createContainer({
      Image: dImage,
      Cmd: ['sleep', '600'],
      HostConfig: {
        Init: true, // like ours (catatonit): PID 1 forwards SIGTERM
        NetworkMode: 'none',
        Memory: 64 * MiB,
        MemorySwap: 64 * MiB,
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
      },
    });
    await c.start();
    return { took: ms(t0), c };
  };

  // ---- one running container each: memory added --------------------------------------------
  const before = { p: rssOf(await enginePids()), d: rssOf(tree(dockerd.pid!)) };
  const first = await podmanStart();
  const firstD = await dockerStart();
  await sleep(1000);
  const conmons = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => {
      try {
        const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return cmd.startsWith('/usr/bin/conmon') && cmd.includes(`/run/ocs-be${tag}/`);
      } catch {
        return false;
      }
    });
  results['podman: + one running container (conmon, engine growth) MiB'] =
    (rssOf(await enginePids()) - before.p + rssOf(conmons)) / MiB;
  const dTree = tree(dockerd.pid!).filter((p) => !readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('sleep'));
  results['dockerd: + one running container (shim, engine growth) MiB'] = (rssOf(dTree) - before.d) / MiB;

  // ---- start times, alternating ---------------------------------------------------------------
  const pt: number[] = [];
  const dt: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const a = await podmanStart();
    pt.push(a.took);
    await driver.remove(space.spaceId, a.id);
    const b = await dockerStart();
    dt.push(b.took);
    await b.c.remove({ force: true });
  }
  results['podman: create+start p50 ms'] = percentile(pt, 50);
  results['dockerd: create+start p50 ms'] = percentile(dt, 50);
  results['ratio podman / dockerd start (p50)'] = percentile(pt, 50) / percentile(dt, 50);

  // ---- stop everything (what a lock waits for) ------------------------------------------------
  let t0 = process.hrtime.bigint();
  await engines.stop(space);
  results['podman: stop containers + engine ms'] = ms(t0);
  t0 = process.hrtime.bigint();
  await firstD.c.stop({ t: 3 });
  dockerd.kill('SIGTERM');
  await new Promise((r) => dockerd!.once('exit', r));
  results['dockerd: stop containers + engine ms'] = ms(t0);
  dockerd = undefined;
  void first;
  report('engines', results);
} finally {
  dockerd?.kill('SIGKILL');
  // A killed dockerd leaves its containers' shims: ours carry this run's containerd namespace.
  execFileSync('sh', [
    '-c',
    `for p in $(pgrep -f -- 'containerd-shim-runc-v2 [-]namespace ocs-bench-${tag} '); do pkill -KILL -P $p; kill -KILL $p; done; true`,
  ]);
  await engines.remove(space).catch(() => undefined);
  await cgroups.destroy(parent).catch(() => undefined);
  // dockerd's own mounts (its netns file, its data root's) are under our two trees only.
  for (const top of [`/run/ocs-bd${tag}`, work])
    execFileSync('sh', ['-c', `grep -o " ${top}[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l; true`]);
  for (const f of [`/run/ocs-bd${tag}`, `/run/ocs-bd${tag}.sock`, `/run/ocs-bd${tag}.pid`, `/run/ocs-be${tag}`])
    rmSync(f, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
  rmSync(join(imagePath, '..'), { recursive: true, force: true });
  if (existsSync(`/sys/class/net/${bridge}`)) execFileSync('ip', ['link', 'delete', bridge]);
}
