/**
 * Containers against the real dockerd: what the live objects look like, what the kernel
 * enforces, and that one space can never reach another space's containers through the driver.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, symlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createDockerDriver } from './driver.js';
import { imageRef, networkName } from './names.js';
import {
  CGROUP_ROOT,
  MiB,
  busyboxTarball,
  cleanupSpaces,
  docker,
  dockerSkip,
  newSpaceId,
  rejectsWith,
  specFor,
  testCgroups,
  waitForState,
} from './test-support.js';
import type { ContainerSpec } from './types.js';

const skip = await dockerSkip();
const driver = createDockerDriver();
const A = newSpaceId();
const B = newSpaceId();
const cgroups = testCgroups();
let parentA = '';
let parentB = '';
let work = '';
const v1 = existsSync(join(CGROUP_ROOT, 'memory'));

/** Creates and starts; returns the Docker id and how long the two calls took. */
async function run(spec: ContainerSpec): Promise<{ dockerId: string; ms: number }> {
  const t0 = performance.now();
  const { dockerId } = await driver.create(spec);
  await driver.start(spec.spaceId, spec.containerId);
  return { dockerId, ms: performance.now() - t0 };
}

before(async () => {
  if (skip) return;
  work = await mkdtemp(join(tmpdir(), 'ocs-docker-ctr-'));
  parentA = cgroups.parentFor(A);
  parentB = cgroups.parentFor(B);
  const tb = await busyboxTarball();
  try {
    await driver.loadImage(A, 'busybox', createReadStream(tb.path));
    await driver.loadImage(B, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await cleanupSpaces([A, B]);
  cgroups.remove();
  await rm(work, { recursive: true, force: true });
});

test('a container writes to its bind-mounted volume and exits; read-only mounts stay read-only', { skip }, async () => {
  const vol = join(work, 'vol');
  const ro = join(work, 'ro');
  mkdirSync(vol);
  mkdirSync(ro);
  const spec = specFor(A, parentA, {
    name: 'writer',
    env: { GREETING: 'hello from the container' },
    command: ['sh', '-c', 'echo "$GREETING" > /data/out.txt && ! touch /ro/x 2>/dev/null'],
    mounts: [
      { source: vol, target: '/data', readOnly: false },
      { source: ro, target: '/ro', readOnly: true },
    ],
  });
  await run(spec);
  const s = await waitForState(driver, A, spec.containerId, ['exited']);
  assert.equal(s.exitCode, 0, 'the write worked and the read-only write failed');
  assert.equal(s.oomKilled, false);
  assert.ok(s.startedAt);
  assert.equal(readFileSync(join(vol, 'out.txt'), 'utf8'), 'hello from the container\n');
  assert.ok(!existsSync(join(ro, 'x')));
});

test('the live container is hardened as asked, and its processes sit under the cgroup parent', { skip }, async () => {
  const spec = specFor(A, parentA, {
    name: 'hardened',
    capAdd: ['NET_BIND_SERVICE'],
    cpuMillicores: 250,
    memoryBytes: 48 * MiB,
    pids: 32,
    readOnlyRootfs: true,
  });
  const { dockerId } = await run(spec);
  const info = await docker.getContainer(dockerId).inspect();
  const h = info.HostConfig as typeof info.HostConfig & { CgroupnsMode?: string; Init?: boolean };
  assert.deepEqual(h.CapDrop, ['ALL']);
  assert.deepEqual(h.CapAdd, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(h.SecurityOpt, ['no-new-privileges']);
  assert.equal(h.Privileged, false);
  assert.equal(h.NetworkMode, networkName(A));
  assert.ok(!['host'].includes(h.PidMode ?? '') && !(h.PidMode ?? '').startsWith('container:'));
  assert.equal(h.IpcMode, 'private');
  assert.ok(!['host'].includes(h.UTSMode ?? ''));
  assert.equal(h.CgroupnsMode, 'private');
  assert.equal(h.Memory, 48 * MiB);
  assert.equal(h.MemorySwap, 48 * MiB);
  assert.equal(h.NanoCpus, 250_000_000);
  assert.equal(h.PidsLimit, 32);
  assert.equal(h.CgroupParent, parentA);
  assert.deepEqual(h.Devices ?? [], []);
  assert.deepEqual(h.PortBindings ?? {}, {});
  assert.equal(h.ReadonlyRootfs, true);
  assert.equal(h.Init, true);
  assert.equal(h.LogConfig?.Type, 'json-file');
  assert.equal(info.Config.Labels['ocs.space'], A);
  assert.equal(info.Config.Labels['ocs.container'], spec.containerId);
  assert.equal(info.Name, `/ocs-${A}-${spec.containerId}`);
  assert.deepEqual(Object.keys(info.NetworkSettings.Networks), [networkName(A)]);

  // The kernel's view of the container's init.
  const pid = info.State.Pid;
  assert.ok(pid > 0);
  const cgroupLines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  const expected = `${parentA}/${dockerId}`;
  const controllers = v1 ? ['memory', 'pids', 'cpu', 'cpuacct', 'devices'] : [''];
  for (const c of controllers) {
    const line = cgroupLines.find((l) => l.split(':')[1]?.split(',').includes(c));
    assert.equal(line?.split(':')[2], expected, `${c || 'unified'} cgroup of the container's pid 1`);
  }
  if (v1) {
    const cg = (ctrl: string, file: string) => readFileSync(join(CGROUP_ROOT, ctrl, expected, file), 'utf8').trim();
    assert.equal(Number(cg('memory', 'memory.limit_in_bytes')), 48 * MiB);
    if (existsSync(join(CGROUP_ROOT, 'memory', expected, 'memory.memsw.limit_in_bytes'))) {
      assert.equal(Number(cg('memory', 'memory.memsw.limit_in_bytes')), 48 * MiB, 'no swap');
    }
    assert.equal(cg('pids', 'pids.max'), '32');
    assert.equal(Number(cg('cpu', 'cpu.cfs_quota_us')) / Number(cg('cpu', 'cpu.cfs_period_us')), 0.25);
  }
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.match(status, /^CapBnd:\s+0000000000000400$/m, 'only CAP_NET_BIND_SERVICE in the bounding set');
  assert.match(status, /^CapEff:\s+0000000000000400$/m);
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.match(status, /^Seccomp:\s+2$/m, "dockerd's default seccomp profile");
});

test('capabilities outside the allow-list are refused, whatever the caller passes', { skip }, async () => {
  for (const capAdd of [['SYS_ADMIN'], ['CAP_SYS_ADMIN'], ['ALL'], ['NET_BIND_SERVICE', 'SYS_PTRACE']]) {
    const spec = specFor(A, parentA, { capAdd });
    await rejectsWith(driver.create(spec), 'invalid_request');
    await rejectsWith(driver.inspect(A, spec.containerId), 'not_found', /no such container/);
  }
});

test('a mount source that is a symlink to /etc is refused, at create and at start', { skip }, async () => {
  const link = join(work, 'etc-link');
  symlinkSync('/etc', link);
  await rejectsWith(
    driver.create(specFor(A, parentA, { mounts: [{ source: link, target: '/data', readOnly: true }] })),
    'invalid_request',
    /symlink/,
  );
  // A volume swapped for a link between create and start: runc would follow it at start.
  const vol = join(work, 'swapped');
  mkdirSync(vol);
  const spec = specFor(A, parentA, { mounts: [{ source: vol, target: '/data', readOnly: false }] });
  await driver.create(spec);
  renameSync(vol, `${vol}.old`);
  symlinkSync('/etc', vol);
  await rejectsWith(driver.start(A, spec.containerId), 'invalid_request', /symlink/);
  assert.equal((await driver.inspect(A, spec.containerId)).state, 'created');
  await driver.remove(A, spec.containerId);
});

test('a container past its memory limit is OOM-killed; its sibling keeps running', { skip }, async () => {
  const sibling = specFor(A, parentA, { name: 'sibling' });
  await run(sibling);
  const hog = specFor(A, parentA, {
    name: 'hog',
    memoryBytes: 32 * MiB,
    // dd allocates its 200 MiB block buffer and fills it from /dev/zero.
    command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1'],
  });
  await run(hog);
  const s = await waitForState(driver, A, hog.containerId, ['exited', 'dead']);
  assert.ok(s.oomKilled || s.exitCode === 137, `oomKilled=${s.oomKilled} exit=${s.exitCode}`);
  assert.equal(s.oomKilled, true, 'docker saw the OOM event');
  assert.equal((await driver.inspect(A, sibling.containerId)).state, 'running');
});

test('logs: stdout and stderr together, tail and truncation; stats read the cgroup', { skip }, async () => {
  const spec = specFor(A, parentA, {
    name: 'talker',
    command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; sleep 300'],
  });
  await run(spec);
  const until = Date.now() + 10_000;
  let all = await driver.logs(A, spec.containerId, { tailLines: 100 });
  while (all.text.split('\n').length < 11 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    all = await driver.logs(A, spec.containerId, { tailLines: 100 });
  }
  assert.equal(all.truncated, false);
  assert.deepEqual(all.text.trim().split('\n').sort(), [
    'err1',
    'err2',
    'err3',
    'err4',
    'err5',
    'out1',
    'out2',
    'out3',
    'out4',
    'out5',
  ]);
  const tail = await driver.logs(A, spec.containerId, { tailLines: 3 });
  assert.equal(tail.truncated, true);
  assert.equal(tail.text.trim().split('\n').length, 3);
  assert.ok(all.text.endsWith(tail.text), 'the tail is the end of the log');
  await rejectsWith(driver.logs(A, spec.containerId, { tailLines: 0 }), 'invalid_request');

  const st = await driver.stats(A, spec.containerId);
  assert.equal(st.memoryLimitBytes, 64 * MiB);
  assert.ok(st.memoryBytes > 0 && st.memoryBytes < 64 * MiB, `memory ${st.memoryBytes}`);
  assert.ok(st.cpuNanos > 0);
  assert.ok(st.pids >= 2, `pids ${st.pids} (docker-init and sleep)`);
});

test("another space's container is not_found for every operation, and untouched", { skip }, async () => {
  const spec = specFor(A, parentA, { name: 'private' });
  await run(spec);
  const id = spec.containerId;
  await rejectsWith(driver.inspect(B, id), 'not_found');
  await rejectsWith(driver.start(B, id), 'not_found');
  await rejectsWith(driver.stop(B, id, 0), 'not_found');
  await rejectsWith(driver.logs(B, id, { tailLines: 10 }), 'not_found');
  await rejectsWith(driver.stats(B, id), 'not_found');
  await rejectsWith(driver.remove(B, id), 'not_found');
  // The same container id in another space names another container: B creates and removes its own.
  await run({ ...spec, spaceId: B, cgroupParent: parentB, name: 'bs-own' });
  await driver.remove(B, id);
  assert.ok(!(await driver.list(B)).some((c) => c.containerId === id && c.name === 'private'));
  assert.equal((await driver.inspect(A, id)).state, 'running');
  assert.ok((await driver.list(A)).some((c) => c.containerId === id && c.name === 'private' && c.state === 'running'));
});

test('lifecycle: stop, start again, stop twice, remove; then not_found', { skip }, async () => {
  const spec = specFor(A, parentA, { name: 'cycle' });
  await run(spec);
  const t0 = performance.now();
  await driver.stop(A, spec.containerId, 5);
  const stopMs = performance.now() - t0;
  assert.ok(
    stopMs < 4000,
    `docker-init forwards SIGTERM, so stop does not wait for the timeout (${Math.round(stopMs)} ms)`,
  );
  assert.equal((await driver.inspect(A, spec.containerId)).state, 'exited');
  await driver.stop(A, spec.containerId);
  await driver.start(A, spec.containerId);
  await driver.start(A, spec.containerId);
  assert.equal((await driver.inspect(A, spec.containerId)).state, 'running');
  await driver.remove(A, spec.containerId);
  await rejectsWith(driver.inspect(A, spec.containerId), 'not_found');
  await rejectsWith(driver.remove(A, spec.containerId), 'not_found');
  await rejectsWith(driver.stop(A, spec.containerId, -1), 'invalid_request');
});

test("image labels cannot claim another space; an image's VOLUMEs need a space mount", { skip }, async () => {
  const tb = await busyboxTarball({ changes: [`LABEL ocs.space=${B}`, 'LABEL ocs.container=ctr_x', 'VOLUME /state'] });
  try {
    await driver.loadImage(A, 'labelled', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
  const spec = specFor(A, parentA, { image: 'labelled' });
  await rejectsWith(driver.create(spec), 'invalid_request', /\/state/);
  const state = join(work, 'state');
  mkdirSync(state);
  const { dockerId } = await run({ ...spec, mounts: [{ source: state, target: '/state', readOnly: false }] });
  const labels = (await docker.getContainer(dockerId).inspect()).Config.Labels;
  assert.equal(labels['ocs.space'], A);
  assert.equal(labels['ocs.container'], spec.containerId);
  assert.ok(!(await driver.list(B)).some((c) => c.containerId === spec.containerId));
  assert.ok((await driver.list(A)).some((c) => c.containerId === spec.containerId));
});

test('removeImage refuses while a container of the space uses the image', { skip }, async () => {
  const spec = specFor(B, parentB, { name: 'user' });
  await driver.create(spec);
  await rejectsWith(driver.removeImage(B, 'busybox'), 'conflict');
  await driver.remove(B, spec.containerId);
  // Still there for the other tests; its removal is covered by the image tests.
  assert.equal((await driver.listImages(B)).length, 1);
});

test("a cgroup parent that does not exist, or is not the space's, is refused", { skip }, async () => {
  await rejectsWith(driver.create(specFor(A, `${cgroups.root}/${A}/missing`)), 'invalid_request', /does not exist/);
  await rejectsWith(driver.create(specFor(A, parentB)), 'invalid_request');
});

test('timing: create+start through the driver vs `docker run -d`', { skip }, async (t) => {
  const driverMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const spec = specFor(A, parentA, { name: `timed${i}` });
    driverMs.push((await run(spec)).ms);
    await driver.remove(A, spec.containerId);
  }
  const cliMs: number[] = [];
  const exec = promisify(execFile);
  const cli = await exec('docker', ['version', '--format', '{{.Client.Version}}']).catch(() => undefined);
  for (let i = 0; cli && i < 3; i++) {
    const name = `ocs-test-cli-${A}-${i}`;
    const t0 = performance.now();
    // Labelled with the test space so the after hook's cleanup finds it if anything fails.
    await exec('docker', [
      'run',
      '-d',
      '--name',
      name,
      '--label',
      `ocs.space=${A}`,
      '--network',
      networkName(A),
      imageRef(A, 'busybox'),
      'sleep',
      '300',
    ]);
    cliMs.push(performance.now() - t0);
    await docker.getContainer(name).remove({ force: true });
  }
  const fmt = (xs: number[]) => xs.map((x) => Math.round(x)).join(', ');
  const cliText = cli
    ? `docker run -d (CLI ${cli.stdout.trim()}): ${fmt(cliMs)} ms`
    : 'no docker CLI in PATH to compare with';
  t.diagnostic(`create+start via driver (hardened, checks included): ${fmt(driverMs)} ms; ${cliText}`);
});
