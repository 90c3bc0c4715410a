/**
 * Run inside the production guest by zfs-cgroup2-systemd.guest.test.ts, not a test itself: the node daemon as the
 * systemd service we ship (packaging/systemd/ocs-node.service, installed as an operator would,
 * docs/operations.md), on a ZFS pool of the guest's second disk, under cgroup v2. Checks the
 * service's own confinement (its leaf of the delegated group, its limits, its capability
 * bounding set), then an owner's run: reserve a space, load an image into its engine, make a
 * volume, upload a file holding a marker, run a container that writes markers, lock (no marker on the raw pool disk, the key
 * unloaded, the engine gone), unlock (the data back, the container running again), move it to a
 * second node on a pool of its own (raw ZFS sends: a seed while it runs, then what changed once
 * locked; a move B refuses first leaves it running; on A nothing but the tombstone; on B the data
 * and the running container, owned by B's ids), back it up (no marker in the archive), lock it
 * (no marker on B's raw pool disk), destroy it (no dataset, cgroup, process, mount or run
 * directory of the space left), restore the backup on A as a fork, stop the services. The daemon writes nothing above
 * the unit's delegated group: the root's cgroup.subtree_control is the same once it has started,
 * reserved a space and started its engine. (runc is another matter: making a container's group,
 * runc 1.1 enables every controller the kernel has at each level from the root down, and the
 * daemon cannot stop it short of giving the engine a cgroup namespace; at the end nothing the
 * root had enabled is gone, and what runc added is reported.) Fails (exit 1) with the service's journal on the first thing that is not so.
 *
 * argv: the pool disk, the image tarball, node B's pool disk. Prints `NODE-SERVICE {...}` with what it measured.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { parseProcMount } from '@ocs/host';
import { rawContains } from '@ocs/host/testing';
import { generatePrivateKey } from '@ocs/protocol';
import { moveSpace, normalizeFingerprint, saveArchive } from '@ocs/client';
import { daemonClient } from './daemon-process.js';
import { sh, startGuestNode, until } from './guest-nodes.js';

const [disk, imageTar, diskB] = process.argv.slice(2) as [string, string, string];
const MiB = 1024 ** 2;
const POOL = 'ocs';
const STATE = '/var/lib/ocs';
const UNIT = 'ocs-node.service';
const CG = '/sys/fs/cgroup';
const UNIT_CG = `/system.slice/${UNIT}`;
/** The second node of the move (guest-nodes.ts names its unit). */
const B_UNIT = 'ocs-node-b.service';
const DAEMON_LIMITS = { memoryBytes: 768 * MiB, pids: 2048 };
const t0 = Date.now();
const times: Record<string, number> = {};
const mark = (what: string) => {
  times[what] = Math.round((Date.now() - t0) / 100) / 10;
  console.log(`[node-service ${times[what]} s] ${what}`);
};
/** Pids whose unified cgroup path contains `part`. */
function pidsIn(part: string): { pid: number; cgroup: string }[] {
  const out: { pid: number; cgroup: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const line = readFileSync(`/proc/${name}/cgroup`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('0::'));
      if (line?.includes(part)) out.push({ pid: Number(name), cgroup: line.slice(3) });
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/**
 * The writer's `sleep 3600` once it runs, in the containers' group below `workloads` (the
 * engine's group beside it holds the namespace anchor, a `sleep infinity`).
 */
function containerPid(workloads: string): { pid: number; cgroup: string } | undefined {
  return pidsIn(`${workloads}/containers/`).find((p) => {
    try {
      return readFileSync(`/proc/${p.pid}/cmdline`, 'utf8') === 'sleep\x003600\x00';
    } catch {
      return false;
    }
  });
}

/** memory.max of `cgroup` and each group above it up to (not including) `top`. */
function limitsAbove(cgroup: string, top: string): string[] {
  const out: string[] = [];
  for (let g = cgroup; g.startsWith(`${top}/`); g = g.slice(0, g.lastIndexOf('/'))) {
    try {
      out.push(readFileSync(`${CG}${g}/memory.max`, 'utf8').trim());
    } catch {
      // A group without the memory controller.
    }
  }
  return out;
}

/** What the kernel says of `cgroup` and each group above it up to `top`: for a failure's message. */
function describeGroups(cgroup: string, top: string): string {
  const read = (g: string, f: string) => {
    try {
      return readFileSync(`${CG}${g}/${f}`, 'utf8').trim();
    } catch (err) {
      return `(${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`;
    }
  };
  const lines: string[] = [];
  for (let g = cgroup; g.startsWith(top); g = g.slice(0, g.lastIndexOf('/'))) {
    lines.push(
      `${g}: controllers=[${read(g, 'cgroup.controllers')}] subtree_control=[${read(g, 'cgroup.subtree_control')}] memory.max=${read(g, 'memory.max')} procs=[${read(g, 'cgroup.procs').split('\n').join(' ')}]`,
    );
  }
  return lines.join('\n');
}

/** CAP_* numbers (capability.h) the unit must keep, and some it must not. */
const CAP = { SYS_MODULE: 16, SYS_RAWIO: 17, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_BOOT: 22, SYS_TIME: 25, SETUID: 7 };
const hasCap = (mask: bigint, n: number) => ((mask >> BigInt(n)) & 1n) === 1n;

async function main(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = {};
  // --- As an operator installs it (docs/operations.md): a pool, node.json, the unit.
  sh('zpool', 'create', '-f', '-O', 'mountpoint=none', POOL, disk);
  mkdirSync('/etc/ocs', { recursive: true });
  writeFileSync(
    '/etc/ocs/node.json',
    JSON.stringify(
      {
        auth: { devIssuer: true },
        listen: { host: '127.0.0.1', port: 8443 },
        storage: { backend: 'zfs', root: '/var/lib/ocs-storage', pool: POOL },
        capacity: {
          farmerReserve: { cpuMillicores: 0, memoryBytes: 256 * MiB, storageBytes: 0 },
          storageBytes: 384 * MiB,
        },
        cgroups: { daemon: DAEMON_LIMITS },
        workloads: { containers: { enabled: true }, libvirt: { enabled: false } },
      },
      null,
      2,
    ),
  );
  const unitText = readFileSync('packaging/systemd/ocs-node.service', 'utf8');
  writeFileSync(`/etc/systemd/system/${UNIT}`, unitText);
  mkdirSync(`/etc/systemd/system/${UNIT}.d`, { recursive: true });
  // The clone stands where a release would be unpacked (/opt/ocs).
  writeFileSync(`/etc/systemd/system/${UNIT}.d/home.conf`, `[Service]\nEnvironment=OCS_HOME=${process.cwd()}\n`);
  // The move's seed and its increment each break off once, as a dropped connection would: the
  // move must go on from there.
  writeFileSync(
    `/etc/systemd/system/${UNIT}.d/failpoints.conf`,
    '[Service]\nEnvironment=OCS_FAILPOINTS=move.seed-cut,move.increment-cut\n',
  );
  sh('systemctl', 'daemon-reload');
  const rootControl = readFileSync(`${CG}/cgroup.subtree_control`, 'utf8').trim();
  sh('systemctl', 'start', UNIT);
  const stateDir = await until('the state directory', () =>
    existsSync(join(STATE, 'tls', 'cert.pem')) ? STATE : undefined,
  );
  const url = 'https://127.0.0.1:8443';
  const owner = generatePrivateKey();
  const c = await until('the daemon to answer', async () => {
    const client = daemonClient(
      stateDir,
      { url },
      { roles: ['spaces', 'storage', 'containers', 'farmer'], org: 'dev', owner },
    );
    await client.node.health();
    return client;
  });
  mark('serving');
  // The second node of the move (below) starts now, beside this one's run: under TCG a daemon's
  // start is about a minute, most of it waiting on its own process, not on this one.
  const bStarting = startGuestNode({
    name: 'b',
    disk: diskB,
    port: 8444,
    owner,
    roles: ['spaces', 'storage', 'containers', 'farmer'],
    storageBytes: 384 * MiB,
    // Beside A's defaults (uids from 200000, subordinate ids from 1000000000, 10.128.0.0/9, 30000-30999).
    ids: {
      uidBase: 300_000,
      subidBase: 500_000_000,
      subnetPool: '10.64.0.0/16',
      ports: { first: 31_000, last: 31_099 },
    },
    containers: true,
  });
  bStarting.catch(() => undefined); // awaited at the move: its failure is reported there

  // --- The service's own confinement.
  const mainPid = Number(sh('systemctl', 'show', '-p', 'MainPID', '--value', UNIT));
  assert.equal(sh('systemctl', 'show', '-p', 'ControlGroup', '--value', UNIT), UNIT_CG);
  const ownCg = readFileSync(`/proc/${mainPid}/cgroup`, 'utf8').trim();
  assert.equal(ownCg, `0::${UNIT_CG}/daemon`, 'the daemon moved itself into its leaf');
  assert.equal(readFileSync(`${CG}${UNIT_CG}/daemon/memory.max`, 'utf8').trim(), String(DAEMON_LIMITS.memoryBytes));
  assert.equal(readFileSync(`${CG}${UNIT_CG}/daemon/pids.max`, 'utf8').trim(), String(DAEMON_LIMITS.pids));
  const capBnd = BigInt(`0x${/CapBnd:\s+([0-9a-f]+)/.exec(readFileSync(`/proc/${mainPid}/status`, 'utf8'))![1]}`);
  for (const n of [CAP.SYS_ADMIN, CAP.SETUID, CAP.SYS_PTRACE])
    assert.ok(hasCap(capBnd, n), `capability ${n} is in the bounding set`);
  for (const n of [CAP.SYS_MODULE, CAP.SYS_RAWIO, CAP.SYS_BOOT, CAP.SYS_TIME])
    assert.ok(!hasCap(capBnd, n), `capability ${n} is not in the bounding set`);
  assert.equal(statSync(STATE).mode & 0o777, 0o700, 'StateDirectoryMode');
  // The unit runs the pinned runtime (scripts/install-node.sh), the one this script runs on.
  const exe = readlinkSync(`/proc/${mainPid}/exe`);
  assert.equal(exe, realpathSync('/usr/local/lib/ocs/node/bin/node'), 'the unit runs the pinned Node.js');
  const runtimeLine = new RegExp(`runtime: +ocs-node \\S+ on Node\\.js ${process.version.replace(/\./g, '\\.')}`);
  await until('the banner naming the runtime in the journal', () =>
    runtimeLine.test(sh('journalctl', '-u', UNIT, '-o', 'cat', '--no-pager')) ? true : undefined,
  );
  report.daemon = { cgroup: ownCg.slice(3), capBnd: capBnd.toString(16), node: process.version };
  // The node's ids (default config) are recorded as root's delegations, so useradd never hands
  // them to an account (spaces/id-ranges.ts).
  for (const file of ['/etc/subuid', '/etc/subgid'])
    for (const line of ['root:200000:50000', 'root:250000:50000', 'root:1000000000:3276800000'])
      assert.ok(readFileSync(file, 'utf8').split('\n').includes(line), `${file} records ${line}`);
  // The unit's daemon made /proc hide other users' processes (spaces.hideProcesses: mount), for
  // the whole machine, not only inside its unit.
  assert.equal(parseProcMount(readFileSync('/proc/self/mountinfo', 'utf8'))?.hidepid, 'invisible', '/proc hidepid');

  // --- An owner's run, through the space API: an image loaded into the space's engine (podman,
  // its store on the space's dataset), a volume, a file holding a marker, and a container that
  // writes markers into its root filesystem, its volume and its stdout (its log).
  const mk = (what: string) => `OCS-${what}-${randomBytes(12).toString('hex')}`;
  const m = { file: mk('FILE'), root: mk('ROOT'), vol: mk('VOL'), out: mk('OUT') };
  // Built from pieces in the command, so only what the container writes holds them whole.
  const split = (x: string) => `${x.slice(0, 8)}"${x.slice(8)}"`;
  const { space, wrappedKey } = await c.spaces.reserve({
    resources: { cpuMillicores: 1000, memoryBytes: 512 * MiB, storageBytes: 256 * MiB, pids: 512 },
    leaseSeconds: 3600,
  });
  const s = c.space(space.id);
  const dataset = `${POOL}/ocs/${space.id}`;
  assert.deepEqual(
    sh('zfs', 'get', '-H', '-o', 'value', 'encryption,keyformat,keystatus,acltype', dataset).split('\n'),
    ['aes-256-gcm', 'raw', 'available', 'posix'],
  );
  // The layout of node-daemon/src/spaces/layout.ts, below the unit's group.
  const spaceCg = `${UNIT_CG}/ocs.slice/${space.id}.space`;
  const workloadsCg = `${spaceCg}/workloads.slice`;
  assert.ok(existsSync(`${CG}${spaceCg}`), 'the space cgroup is below the unit');
  // The reservation is enforced by the kernel: the workloads' memory is capped at it.
  assert.equal(readFileSync(`${CG}${workloadsCg}/memory.max`, 'utf8').trim(), String(512 * MiB));
  mark('reserved');
  await s.images.load('busybox', { path: imageTar });
  assert.ok(
    (await s.images.list()).images.some((i) => i.name === 'busybox'),
    'the image is listed',
  );
  const engine = pidsIn(`${workloadsCg}/engine`);
  assert.ok(engine.length > 0, "the space's engine runs in the space's engine group");
  mark('image loaded');
  assert.equal(
    readFileSync(`${CG}/cgroup.subtree_control`, 'utf8').trim(),
    rootControl,
    "the root's subtree_control, after the daemon's own work",
  );
  await s.volumes.create({ name: 'data', sizeBytes: 32 * MiB });
  await s.files.upload('marker', new TextEncoder().encode(m.file.repeat(2048)));
  // More than one archive chunk (4 MiB) in the space's data, so the move's seed of it can be
  // cut between two (the failpoint below) and resumed.
  await s.files.upload('bulk', randomBytes(6 * MiB));
  const mountpoint = sh('findmnt', '-n', '-o', 'TARGET', '--source', dataset);
  const holding = sh('grep', '-rl', '-F', m.file, mountpoint).split('\n').filter(Boolean);
  assert.equal(holding.length, 1, `the marker is in one file of the space: ${holding.join(', ')}`);
  // The space's data is its own child dataset (`<space>/data`), under the same encryption root.
  assert.equal(
    sh('findmnt', '-n', '-o', 'SOURCE', '--target', holding[0]!),
    `${dataset}/data`,
    'the file is on the space dataset',
  );
  const ctr = await s.containers.create({
    name: 'writer',
    image: 'busybox',
    command: [
      'sh',
      '-c',
      `echo ${split(m.root)} > /tmp/m; echo ${split(m.vol)} > /data/v; echo ${split(m.out)}; exec sleep 3600`,
    ],
    mounts: [{ volume: 'data', target: '/data' }],
    cpuMillicores: 250,
    memoryBytes: 64 * MiB,
  });
  assert.equal(ctr.state, 'running');
  await until('the stdout marker in the logs', async () =>
    (await s.containers.logs('writer', { tail: 10 })).text.includes(m.out) ? true : undefined,
  );
  const sleeper = await until('the container process', () => containerPid(workloadsCg));
  // The kernel bounds the container at its own limit, inside the space's group.
  assert.ok(
    limitsAbove(sleeper.cgroup, workloadsCg).includes(String(64 * MiB)),
    `the container's memory.max: ${limitsAbove(sleeper.cgroup, workloadsCg).join(', ')}\n${describeGroups(sleeper.cgroup, UNIT_CG)}`,
  );
  // Its root filesystem is the space's store (fuse-overlayfs over the space dataset).
  assert.equal(readFileSync(`/proc/${sleeper.pid}/root/tmp/m`, 'utf8').trim(), m.root);
  mark('container running');
  report.space = { dataset, engineProcesses: engine.length, container: sleeper.cgroup };

  // --- Lock: the key leaves, the engine stops, the pool disk holds no marker.
  await c.spaces.lock(space.id);
  mark('locked');
  assert.equal(sh('zfs', 'get', '-H', '-o', 'value', 'keystatus', dataset), 'unavailable');
  assert.deepEqual(pidsIn(`${spaceCg}/workloads.slice/`), [], "none of the space's workloads runs while locked");
  // The control: plaintext on an unencrypted dataset of the same pool is seen on the disk.
  const control = `OCS-CONTROL-${randomBytes(12).toString('hex')}`;
  sh('zfs', 'create', '-o', 'mountpoint=/var/tmp/ocs-control', `${POOL}/control`);
  writeFileSync('/var/tmp/ocs-control/marker', control.repeat(2048));
  sh('zpool', 'sync', POOL);
  assert.equal(rawContains(disk, Buffer.from(control)), true, 'the control marker is on the raw disk');
  for (const [what, marker] of Object.entries(m))
    assert.equal(rawContains(disk, Buffer.from(marker)), false, `the ${what} marker is on the raw pool disk`);
  mark('scanned');

  // --- Unlock: the data is back.
  await c.spaces.unlock(space.id, wrappedKey);
  assert.ok(
    (await s.files.list()).files.some((f) => f.name === 'marker' && f.sizeBytes === m.file.length * 2048),
    'the file is back',
  );
  assert.ok(
    (await s.images.list()).images.some((i) => i.name === 'busybox'),
    'the image is back',
  );
  const again = await until('the container to run again', () => containerPid(workloadsCg));
  assert.equal((await s.containers.get('writer')).state, 'running', 'unlock restored the container');
  assert.equal(
    readFileSync(`/proc/${again.pid}/root/tmp/m`, 'utf8').trim(),
    m.root,
    'the root filesystem kept its data',
  );
  assert.equal(readFileSync(`/proc/${again.pid}/root/data/v`, 'utf8').trim(), m.vol, 'the volume kept its data');
  mark('unlocked');

  // --- Move (issue 25): a second node on a pool of its own disk (the unit we ship again, with
  // its own state, port, uids, subordinate ids, subnets and ports), and the space sent to it as
  // a raw ZFS stream (`zfs send -w`: the blocks as encrypted on disk, no key loaded to send or
  // receive). On B it waits locked, opens with the owner's key, and everything is back.
  const b = await bStarting;
  mark('node b serving');
  // A move B has no import for: B refuses the seed, and the move ends before the lock, the
  // space still running here, no seed left in A's pool.
  const toB = { url: b.url, fingerprint: normalizeFingerprint((await b.client.node.info()).tlsFingerprint) };
  await assert.rejects(c.spaces.move(space.id, toB), (e: { code?: string }) => e.code === 'move_aborted');
  assert.equal((await c.spaces.get(space.id)).state, 'active', 'the space runs on after a refused seed');
  assert.equal(sh('zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name', '-r', dataset), '', 'snapshots left on A');
  mark('seed refused');
  const tombstone = await moveSpace(c, b.client, space.id);
  assert.equal(tombstone.to?.url, b.url);
  mark('moved');
  // The space ran when the move began: it went as a seed sent while it still ran, dataset by
  // dataset, then, locked, only what changed since (B's audit names each step); the stream of
  // `data` was cut once (A's failpoint) and went on from B's copy, not from its start. No
  // snapshot of either is left on B.
  type ImportDetail = { step?: string; dataset?: string; resumed?: boolean };
  const imports = (await b.client.audit.list({ limit: 100 })).entries
    .filter((e) => e.action === 'space.import' && e.target === space.id)
    .map((e) => ({ outcome: e.outcome, ...(e.detail as ImportDetail) }));
  const ok = imports.filter((e) => e.outcome === 'ok');
  assert.deepEqual(
    [...new Set(ok.map((e) => e.step))].sort(),
    ['commit', 'increment', 'open', 'seed'].sort(),
    'the import steps on B',
  );
  const seeded = ok.filter((e) => e.step === 'seed').map((e) => e.dataset);
  for (const ds of ['.', 'data', 'volumes'])
    assert.ok(seeded.includes(ds), `the seed's ${ds} arrived: ${JSON.stringify(imports)}`);
  assert.ok(
    imports.some((e) => e.step === 'seed' && e.dataset === 'data' && e.outcome === 'failed') &&
      ok.some((e) => e.step === 'seed' && e.dataset === 'data' && e.resumed === true),
    `the seed's data was cut, then resumed: ${JSON.stringify(imports)}`,
  );
  assert.ok(
    imports.some((e) => e.step === 'increment' && e.outcome === 'failed'),
    `the increment was cut, then sent again: ${JSON.stringify(imports)}`,
  );
  const onB = `${b.pool}/ocs/${space.id}`;
  assert.equal(sh('zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name', '-r', onB), '', 'snapshots left on B');
  assert.deepEqual(
    sh('zfs', 'get', '-H', '-o', 'value', 'encryption,keyformat,keystatus,encryptionroot,mountpoint', onB).split('\n'),
    ['aes-256-gcm', 'raw', 'unavailable', onB, `${b.storageRoot}/mnt/${space.id}`],
    'the moved dataset is its own encryption root, locked, mounted where B mounts spaces',
  );
  assert.deepEqual(
    sh('zfs', 'list', '-H', '-o', 'name', '-r', POOL)
      .split('\n')
      .filter((d) => d.includes(space.id)),
    [],
    'nothing of the space is left in the pool of A',
  );
  assert.equal(existsSync(`${CG}${spaceCg}`), false, "A's cgroup of the space is gone");
  await assert.rejects(
    c.spaces.get(space.id),
    (e: { code?: string }) => e.code === 'space_moved',
    'A keeps a tombstone',
  );
  const sB = b.client.space(space.id);
  await b.client.spaces.unlock(space.id, wrappedKey);
  assert.ok(
    (await sB.files.list()).files.some((f) => f.name === 'marker' && f.sizeBytes === m.file.length * 2048),
    'the file moved',
  );
  const bWorkloads = `${b.cgroup}/ocs.slice/${space.id}.space/workloads.slice`;
  const moved = await until('the container to run on B', () => containerPid(bWorkloads));
  assert.equal((await sB.containers.get('writer')).state, 'running', 'the container runs on B');
  assert.equal(readFileSync(`/proc/${moved.pid}/root/tmp/m`, 'utf8').trim(), m.root, 'its root filesystem moved');
  assert.equal(readFileSync(`/proc/${moved.pid}/root/data/v`, 'utf8').trim(), m.vol, 'its volume moved');
  // The files belong to B's ids for the space now (A's were 200000 and up; B's are 300000 and up).
  const uidOnB = statSync(`/proc/${moved.pid}/root/data/v`).uid;
  assert.ok(uidOnB >= 300_000, `the volume's file is owned by ${uidOnB}, one of B's ids`);
  mark('unlocked on b');
  // A backup of the moved space, locked: the archive holds none of the markers.
  await b.client.spaces.lock(space.id);
  const backup = '/var/tmp/ocs-moved.ocsa';
  await saveArchive(await b.client.spaces.export(space.id), backup, owner);
  for (const [what, marker] of Object.entries(m))
    assert.equal(rawContains(backup, Buffer.from(marker)), false, `the ${what} marker is in the backup`);
  report.backupBytes = statSync(backup).size;
  mark('backed up');
  // Locked on B: B's pool disk holds no marker either.
  sh('zpool', 'sync', b.pool);
  for (const [what, marker] of Object.entries(m))
    assert.equal(rawContains(b.disk, Buffer.from(marker)), false, `the ${what} marker is on B's raw pool disk`);
  mark('scanned b');

  // --- Destroy: nothing of the space is left on B.
  await b.client.spaces.destroy(space.id);
  mark('destroyed');
  const datasets = sh('zfs', 'list', '-H', '-o', 'name', '-r', b.pool).split('\n');
  assert.deepEqual(
    datasets.filter((d) => d.includes(space.id)),
    [],
    'datasets left',
  );
  assert.equal(existsSync(`${CG}${b.cgroup}/ocs.slice/${space.id}.space`), false, 'the space cgroup is gone');
  assert.deepEqual(pidsIn(space.id), [], 'processes left');
  assert.deepEqual(
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(space.id)),
    [],
    'mounts left',
  );
  assert.equal(existsSync(`/run/ocs-b/e/${space.id}`), false, 'run directory left');
  report.datasetsAfter = datasets;

  // --- The backup restored on A, as a fork: the file and the volume are back under A's ids.
  const fork = await c.spaces.restore(backup, { leaseSeconds: 3600, name: 'fork' });
  assert.notEqual(fork.id, space.id);
  await c.spaces.unlock(fork.id, wrappedKey);
  const sF = c.space(fork.id);
  assert.ok(
    (await sF.files.list()).files.some((f) => f.name === 'marker' && f.sizeBytes === m.file.length * 2048),
    'the file is in the restored fork',
  );
  await c.spaces.destroy(fork.id);
  rmSync(backup);
  mark('restored on a');
  sh('systemctl', 'stop', b.unit);
  assert.equal(sh('systemctl', 'show', '-p', 'Result', '--value', b.unit), 'success');

  // --- Stop: the service ends cleanly; nothing above its group was touched.
  sh('systemctl', 'stop', UNIT);
  assert.equal(sh('systemctl', 'show', '-p', 'Result', '--value', UNIT), 'success');
  const rootAfter = readFileSync(`${CG}/cgroup.subtree_control`, 'utf8').trim().split(/\s+/);
  for (const c of rootControl.split(/\s+/)) assert.ok(rootAfter.includes(c), `the root's ${c} is still enabled`);
  report.rootSubtreeControl = rootControl;
  report.rootSubtreeControlAddedByRunc = rootAfter.filter((c) => !rootControl.split(/\s+/).includes(c));
  mark('stopped');
  report.seconds = times;
  return report;
}

try {
  console.log(`NODE-SERVICE ${JSON.stringify(await main())}`);
} catch (err) {
  console.log(`NODE-SERVICE FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  try {
    for (const unit of [UNIT, B_UNIT])
      console.log(
        execFileSync('journalctl', ['-u', unit, '--no-pager', '-n', '150', '-o', 'cat'], { encoding: 'utf8' }),
      );
    // The engines' own words stay in the space (the daemon logs no tenant content); this guest is thrown away.
    console.log(
      execFileSync(
        'sh',
        ['-c', 'for f in $(find /var/lib/ocs-storage -name engine.log); do echo "== $f"; tail -c 3000 "$f"; done'],
        { encoding: 'utf8' },
      ),
    );
  } catch {
    // No journal: the failure above is all there is.
  }
  process.exit(1);
}
