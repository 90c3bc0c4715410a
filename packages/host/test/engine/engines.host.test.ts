/**
 * A space's own podman against the real kernel: the container runs as the space's subordinate
 * uid in the space's cgroup, its layers and logs are in the space's directory and nowhere on the
 * host, the engine exits when idle while the container keeps running, and a stop leaves no
 * process, mount or run directory behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { detectCgroups } from '#src/cgroups/detect.js';
import type { CgroupDriver } from '#src/cgroups/types.js';
import { bridgeName } from '#src/podman/names.js';
import { busyboxTarball, newSpaceId, specFor, waitForLogs, waitForState } from '@ocs/host/testing/podman';
import { requireHost } from '@ocs/host/testing/require-host';
import { engineServiceRunning } from '@ocs/host/testing/engines';
import { SpaceEngines, ping } from '#src/engine/engines.js';
import type { EngineSpace } from '#src/engine/engines.js';

const skip = await requireHost(
  'podman',
  existsSync('/usr/bin/podman') && existsSync('/usr/bin/catatonit')
    ? false
    : 'podman and catatonit are not installed (scripts/install-host-deps.sh)',
);

const root = `ocs-test-eng-${process.pid}`;
let cgroups: CgroupDriver;
let work = '';
let engines: SpaceEngines;
const A = newSpaceId();
const F = newSpaceId();
let fuseEngines: SpaceEngines;
const base = 1_900_000_000 + (process.pid % 1000) * 65536;

function spaceOf(spaceId: string, n: number): EngineSpace {
  return {
    spaceId,
    dataDir: join(work, spaceId, 'engine'),
    idMap: { base: base + n * 65536, size: 65536 },
    subnet: `10.250.${(process.pid % 200) + n}.0/26`,
    engineGroup: `${root}/${spaceId}.space/workloads.slice/engine`,
    containersGroup: `${root}/${spaceId}.space/workloads.slice/containers`,
  };
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

before(async () => {
  if (skip) return;
  cgroups = await detectCgroups();
  // Not under /tmp: the engine's namespace covers /tmp with the space's own.
  await mkdir('/var/lib/ocs-test', { recursive: true, mode: 0o700 });
  work = await mkdtemp('/var/lib/ocs-test/engine-');
  engines = new SpaceEngines({ runRoot: `/run/ocs-test-e${process.pid}`, cgroups, idleSeconds: 2 });
  fuseEngines = new SpaceEngines({
    runRoot: `/run/ocs-test-f${process.pid}`,
    cgroups,
    idleSeconds: 30,
    fuseOverlayfs: 'always',
  });
});

after(async () => {
  if (skip) return;
  await engines.remove(spaceOf(A, 0)).catch(() => undefined);
  await fuseEngines.remove(spaceOf(F, 1)).catch(() => undefined);
  await rm(`/run/ocs-test-f${process.pid}`, { recursive: true, force: true });
  await cgroups.destroy(root).catch(() => undefined);
  await rm(`/run/ocs-test-e${process.pid}`, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
  await rmdir('/var/lib/ocs-test').catch(() => undefined); // shared by concurrent runs: only if empty
});

test(
  'a container of the space runs as its subordinate uid, in its cgroup, with its data in the space',
  { skip },
  async () => {
    const space = spaceOf(A, 0);
    const driver = await engines.driver(space);
    const tb = await busyboxTarball();
    try {
      await driver.loadImage(A, 'busybox', createReadStream(tb.path));
    } finally {
      tb.remove();
    }
    assert.deepEqual(
      (await driver.listImages(A)).map((i) => i.name),
      ['busybox'],
    );
    const spec = specFor(A, cgroups.absolutePath(space.containersGroup), {
      command: ['sh', '-c', 'echo MARK-OUT-engine; echo MARK-ROOT-engine > /tmp/m; exec sleep 300'],
      env: { MARK: 'MARK-ENV-engine' },
    });
    await driver.create(spec);
    await driver.start(A, spec.containerId);
    await waitForState(driver, A, spec.containerId, ['running']);
    const pids = execFileSync('pgrep', ['-f', 'MARK-OUT-engine|sleep 300'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number)
      .filter((p) => readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(`${A}.space/workloads.slice/containers`));
    assert.ok(pids.length > 0, 'the container process is in the space containers group');
    const status = readFileSync(`/proc/${pids[0]}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${space.idMap.base}\\s`, 'm'));
    assert.match(
      readFileSync(`/proc/${pids[0]}/uid_map`, 'utf8'),
      new RegExp(`^\\s*0\\s+${space.idMap.base}\\s+65536`),
    );
    assert.match(await waitForLogs(driver, A, spec.containerId, /MARK-OUT-engine/), /MARK-OUT-engine/);
    // The writable layer and the log are in the space's directory, and no mount of the engine is on the host.
    const inSpace = execFileSync('grep', ['-rl', '-e', 'MARK-ROOT-engine', '-e', 'MARK-OUT-engine', space.dataDir], {
      encoding: 'utf8',
    });
    assert.ok(inSpace.includes('ctr.log'), 'the log is in the space');
    assert.deepEqual(mountsUnder(space.dataDir), [], 'no engine mount is visible on the host');
    // Its containers' locks are in a /dev/shm of its own, not the host's one every engine shares.
    const anchor = readFileSync(engines.layout(space).anchorPid, 'utf8').trim();
    const shm = statSync(`/proc/${anchor}/root/dev/shm`);
    assert.notEqual(shm.dev, statSync('/dev/shm').dev, "the engine's /dev/shm is its own");
    assert.ok(existsSync(`/proc/${anchor}/root/dev/shm/libpod_lock`), "podman's locks are there");

    // A second container comes and goes while the first runs (their mounts must not pin each other).
    const second = specFor(A, cgroups.absolutePath(space.containersGroup), { command: ['sleep', '300'] });
    await driver.create(second);
    await driver.start(A, second.containerId);
    await driver.remove(A, second.containerId);

    // Idle: the engine exits, the container keeps running; the next call starts the engine again.
    const serviceRunning = () => engineServiceRunning(cgroups, space.engineGroup);
    const until = Date.now() + 20_000;
    while ((await serviceRunning()) && Date.now() < until) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await serviceRunning(), false, 'the idle engine exited');
    assert.equal(await ping(engines.layout(space).socket), false);
    assert.equal((await (await engines.driver(space)).inspect(A, spec.containerId)).state, 'running');

    const wasRunning = await engines.stop(space);
    assert.deepEqual(wasRunning, [spec.containerId]);
    assert.deepEqual(await cgroups.processes(space.engineGroup), []);
    assert.equal(existsSync(engines.layout(space).runDir), false);

    // The engine's store survives a stop: the container is still there and starts again.
    const again = await engines.driver(space);
    assert.equal((await again.inspect(A, spec.containerId)).state, 'exited');
    await again.start(A, spec.containerId);
    await waitForState(again, A, spec.containerId, ['running']);
    await again.remove(A, spec.containerId);
    await engines.remove(space);
    assert.equal(existsSync(`/sys/class/net/${bridgeName(A)}`), false, 'the bridge is gone with the space');
  },
);

test(
  "with fuse-overlayfs (the engine's layers on ZFS), the container's root owns its root filesystem and writes to it",
  { skip: skip || (existsSync('/usr/bin/fuse-overlayfs') ? false : 'fuse-overlayfs is not installed') },
  async () => {
    const space = spaceOf(F, 1);
    const driver = await fuseEngines.driver(space);
    const tb = await busyboxTarball();
    try {
      await driver.loadImage(F, 'busybox', createReadStream(tb.path));
    } finally {
      tb.remove();
    }
    const spec = specFor(F, cgroups.absolutePath(space.containersGroup), {
      command: [
        'sh',
        '-c',
        'echo "owner $(stat -c %u /etc) uid $(id -u)"; echo w > /etc/ocs-w && echo wrote; exec sleep 300',
      ],
    });
    await driver.create(spec);
    await driver.start(F, spec.containerId);
    await waitForState(driver, F, spec.containerId, ['running']);
    const logs = await waitForLogs(driver, F, spec.containerId, /wrote|denied|Permission/);
    // Shifted once: what the image's root owns is the container's root's (not the overflow id).
    assert.match(logs, /owner 0 uid 0/);
    assert.match(logs, /wrote/);
    const pid = Number(
      execFileSync('pgrep', ['-f', '^sleep 300$'], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .find((p) => readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(`${F}.space/workloads.slice/containers`)),
    );
    assert.ok(pid > 0, 'the container process is in the space containers group');
    const rootMount = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === '/');
    assert.match(rootMount ?? '', / - fuse\.fuse-overlayfs /, 'the root filesystem is mounted by fuse-overlayfs');
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${space.idMap.base}\\s`, 'm'));
    await driver.remove(F, spec.containerId);
    await fuseEngines.remove(space);
  },
);
