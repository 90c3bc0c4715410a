/**
 * Containers in a space's own podman engine, against the real kernel: what the live objects
 * look like, what the kernel enforces, and that one space can never reach another space's
 * containers, neither in its own engine nor by asking another space's driver.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync, readFileSync, readlinkSync, renameSync, symlinkSync } from 'node:fs';
import { chown, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { networkName } from '#src/podman/names.js';
import {
  CGROUP_ROOT,
  MiB,
  busyboxTarball,
  engineSkip,
  newSpaceId,
  rejectsWith,
  specFor,
  testEngines,
  waitForState,
  type TestEngines,
  type TestSpace,
} from '@ocs/host/testing/podman';
import type { ContainerSpec, ContainerDriver } from '#src/podman/types.js';

const skip = await engineSkip();
const A = newSpaceId();
const B = newSpaceId();
let t: TestEngines;
let a: TestSpace;
let b: TestSpace;
let driverA: ContainerDriver;
let driverB: ContainerDriver;
const v1 = existsSync(join(CGROUP_ROOT, 'memory'));

/** Creates and starts in the spec's space; returns the engine's id. */
async function run(spec: ContainerSpec): Promise<{ dockerId: string }> {
  const driver = spec.spaceId === B ? driverB : driverA;
  const { dockerId } = await driver.create(spec);
  await driver.start(spec.spaceId, spec.containerId);
  return { dockerId };
}

/**
 * A directory of the test's own that the space's containers may write: it belongs to their root,
 * the space's first subordinate id (the broker chowns a space's volumes the same way).
 */
async function volume(name: string, space: TestSpace): Promise<string> {
  const dir = join(t.work, name);
  await mkdir(dir, { mode: 0o755 });
  await chown(dir, space.idMap.base, space.idMap.base);
  return dir;
}

before(async () => {
  if (skip) return;
  t = await testEngines();
  a = t.space(A);
  b = t.space(B);
  driverA = await t.driver(A);
  driverB = await t.driver(B);
  const tb = await busyboxTarball();
  try {
    await driverA.loadImage(A, 'busybox', createReadStream(tb.path));
    await driverB.loadImage(B, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await t.cleanup();
});

test('a container writes to its bind-mounted volume and exits; read-only mounts stay read-only', { skip }, async () => {
  const vol = await volume('vol', a);
  const ro = await volume('ro', a);
  const spec = specFor(A, a.parent, {
    name: 'writer',
    env: { GREETING: 'hello from the container' },
    command: ['sh', '-c', 'echo "$GREETING" > /data/out.txt && ! touch /ro/x 2>/dev/null'],
    mounts: [
      { source: vol, target: '/data', readOnly: false },
      { source: ro, target: '/ro', readOnly: true },
    ],
  });
  await run(spec);
  const s = await waitForState(driverA, A, spec.containerId, ['exited']);
  assert.equal(s.exitCode, 0, 'the write worked and the read-only write failed');
  assert.equal(s.oomKilled, false);
  assert.ok(s.startedAt);
  assert.equal(readFileSync(join(vol, 'out.txt'), 'utf8'), 'hello from the container\n');
  assert.ok(!existsSync(join(ro, 'x')));
});

test('the live container is hardened as asked, and its processes sit under the cgroup parent', { skip }, async () => {
  const spec = specFor(A, a.parent, {
    name: 'hardened',
    capAdd: ['NET_BIND_SERVICE'],
    cpuMillicores: 250,
    memoryBytes: 48 * MiB,
    pids: 32,
    readOnlyRootfs: true,
  });
  const { dockerId } = await run(spec);
  const sibling = specFor(A, a.parent, { name: 'hardened-sibling' });
  const { dockerId: siblingId } = await run(sibling);
  // The engine's own view (libpod: the Docker API shows neither the capability sets nor the id map).
  const info = await t.libpod<LibpodInspect>(A, `/containers/${dockerId}/json`);
  const h = info.HostConfig;
  assert.deepEqual(info.EffectiveCaps, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(info.BoundingCaps, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(h.SecurityOpt, ['no-new-privileges']);
  assert.equal(h.Privileged, false);
  assert.deepEqual(h.IDMappings, { UidMap: [`0:${a.idMap.base}:65536`], GidMap: [`0:${a.idMap.base}:65536`] });
  assert.equal(h.UsernsMode, 'private');
  assert.equal(h.PidMode, 'private');
  assert.equal(h.UTSMode, 'private');
  assert.equal(h.CgroupMode, 'private');
  assert.equal(h.Memory, 48 * MiB);
  assert.equal(h.MemorySwap, 48 * MiB, 'no swap');
  assert.equal(h.NanoCpus, 250_000_000);
  assert.equal(h.PidsLimit, 32);
  assert.equal(h.CgroupParent, a.parent);
  assert.deepEqual(h.Devices ?? [], []);
  assert.deepEqual(h.PortBindings ?? {}, {});
  assert.equal(h.PublishAllPorts, false);
  assert.equal(h.ReadonlyRootfs, true);
  assert.equal(h.Init, true);
  assert.equal(h.LogConfig?.Type, 'k8s-file');
  assert.ok(h.LogConfig?.Path?.startsWith(`${a.dataDir}/`), `the log is in the space: ${h.LogConfig?.Path}`);
  const limits = new Map(h.Ulimits?.map((u) => [u.Name, [u.Soft, u.Hard]]));
  assert.deepEqual(limits.get('RLIMIT_NOFILE'), [1024, 1024]);
  const nproc = limits.get('RLIMIT_NPROC');
  assert.ok(nproc && nproc[0] === nproc[1] && nproc[1]! <= 16_384, `nproc ${String(nproc)}`);
  assert.equal(info.Config.Labels['ocs.space'], A);
  assert.equal(info.Config.Labels['ocs.container'], spec.containerId);
  assert.equal(info.Name, `ocs-${A}-${spec.containerId}`);
  assert.deepEqual(Object.keys(info.NetworkSettings.Networks), [networkName(A)]);

  // The kernel's view of the container's init.
  const pid = info.State.Pid;
  assert.ok(pid > 0);
  const cgroupLines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  const expected = `${a.parent}/libpod-${dockerId}`;
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
  } else {
    const cg = (file: string) => readFileSync(join(CGROUP_ROOT, expected, file), 'utf8').trim();
    assert.equal(Number(cg('memory.max')), 48 * MiB);
    assert.equal(cg('memory.swap.max'), '0', 'no swap');
    assert.equal(cg('pids.max'), '32');
    assert.equal(cg('cpu.max'), '25000 100000');
  }
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  // Container root is the space's first subordinate id on the host, for uid and gid alike.
  assert.match(status, new RegExp(`^Uid:\\s+${a.idMap.base}\\s+${a.idMap.base}\\s`, 'm'));
  assert.match(status, new RegExp(`^Gid:\\s+${a.idMap.base}\\s+${a.idMap.base}\\s`, 'm'));
  assert.match(readFileSync(`/proc/${pid}/uid_map`, 'utf8'), new RegExp(`^\\s*0\\s+${a.idMap.base}\\s+65536\\s*$`));
  assert.match(readFileSync(`/proc/${pid}/gid_map`, 'utf8'), new RegExp(`^\\s*0\\s+${a.idMap.base}\\s+65536\\s*$`));
  assert.match(status, /^CapBnd:\s+0000000000000400$/m, 'only CAP_NET_BIND_SERVICE in the bounding set');
  assert.match(status, /^CapEff:\s+0000000000000400$/m);
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.match(status, /^Seccomp:\s+2$/m, "podman's default seccomp profile");
  // Namespaces of its own: none shared with the host, nor with the sibling container.
  const siblingPid = (await t.libpod<LibpodInspect>(A, `/containers/${siblingId}/json`)).State.Pid;
  for (const ns of ['user', 'mnt', 'pid', 'ipc', 'uts', 'net', 'cgroup']) {
    const own = readlinkSync(`/proc/${pid}/ns/${ns}`);
    assert.notEqual(own, readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace not the host's`);
    assert.notEqual(own, readlinkSync(`/proc/${siblingPid}/ns/${ns}`), `${ns} namespace not the sibling's`);
  }
});

test('capabilities outside the allow-list are refused, whatever the caller passes', { skip }, async () => {
  for (const capAdd of [['SYS_ADMIN'], ['CAP_SYS_ADMIN'], ['ALL'], ['NET_BIND_SERVICE', 'SYS_PTRACE']]) {
    const spec = specFor(A, a.parent, { capAdd });
    await rejectsWith(driverA.create(spec), 'invalid_request');
    await rejectsWith(driverA.inspect(A, spec.containerId), 'not_found', /no such container/);
  }
});

test(
  'an image with no CMD or ENTRYPOINT (docker import makes one) needs a command: invalid_request, nothing made',
  { skip },
  async () => {
    // The test image is `docker import`ed busybox: it has neither.
    for (const command of [undefined, []]) {
      const spec = specFor(A, a.parent, { name: 'no-command', command });
      await rejectsWith(driverA.create(spec), 'invalid_request', /no CMD or ENTRYPOINT: give the container a command/);
      await rejectsWith(driverA.inspect(A, spec.containerId), 'not_found', /no such container/);
    }
  },
);

test('a mount source that is a symlink to /etc is refused, at create and at start', { skip }, async () => {
  const link = join(t.work, 'etc-link');
  symlinkSync('/etc', link);
  await rejectsWith(
    driverA.create(specFor(A, a.parent, { mounts: [{ source: link, target: '/data', readOnly: true }] })),
    'invalid_request',
    /symlink/,
  );
  // A volume swapped for a link between create and start: runc would follow it at start.
  const vol = await volume('swapped', a);
  const spec = specFor(A, a.parent, { mounts: [{ source: vol, target: '/data', readOnly: false }] });
  await driverA.create(spec);
  renameSync(vol, `${vol}.old`);
  symlinkSync('/etc', vol);
  await rejectsWith(driverA.start(A, spec.containerId), 'invalid_request', /symlink/);
  assert.equal((await driverA.inspect(A, spec.containerId)).state, 'created');
  await driverA.remove(A, spec.containerId);
});

test(
  "past its memory limit a container is OOM-killed (the kernel's record), a plain SIGKILL is not; a sibling runs on",
  { skip },
  async () => {
    const sibling = specFor(A, a.parent, { name: 'sibling' });
    await run(sibling);
    const hog = specFor(A, a.parent, {
      name: 'hog',
      memoryBytes: 32 * MiB,
      // dd allocates its 200 MiB block buffer and fills it from /dev/zero.
      command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1'],
    });
    await run(hog);
    const s = await waitForState(driverA, A, hog.containerId, ['exited', 'dead']);
    assert.equal(s.exitCode, 137, 'killed by SIGKILL');
    assert.equal(s.oomKilled, true, 'the kernel killed it at its memory limit');
    // The same exit code without the OOM killer: a process that SIGKILLs itself.
    const killed = specFor(A, a.parent, { name: 'self-kill', command: ['sh', '-c', 'kill -9 $$'] });
    await run(killed);
    const k = await waitForState(driverA, A, killed.containerId, ['exited', 'dead']);
    assert.equal(k.exitCode, 137);
    assert.equal(k.oomKilled, false, 'an exit 137 is not an OOM kill by itself');
    assert.equal((await driverA.inspect(A, sibling.containerId)).state, 'running');
  },
);

test('logs: stdout and stderr together, tail and truncation; stats read the cgroup', { skip }, async () => {
  const spec = specFor(A, a.parent, {
    name: 'talker',
    command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; sleep 300'],
  });
  await run(spec);
  const until = Date.now() + 10_000;
  let all = await driverA.logs(A, spec.containerId, { tailLines: 100 });
  while (all.text.split('\n').length < 11 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    all = await driverA.logs(A, spec.containerId, { tailLines: 100 });
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
  const tail = await driverA.logs(A, spec.containerId, { tailLines: 3 });
  assert.equal(tail.truncated, true);
  assert.equal(tail.text.trim().split('\n').length, 3);
  assert.ok(all.text.endsWith(tail.text), 'the tail is the end of the log');
  await rejectsWith(driverA.logs(A, spec.containerId, { tailLines: 0 }), 'invalid_request');

  const st = await driverA.stats(A, spec.containerId);
  assert.equal(st.memoryLimitBytes, 64 * MiB);
  assert.ok(st.memoryBytes > 0 && st.memoryBytes < 64 * MiB, `memory ${st.memoryBytes}`);
  assert.ok(st.cpuNanos > 0);
  assert.ok(st.pids >= 2, `pids ${st.pids} (catatonit and sleep)`);
});

test("another space's container is not_found for every operation, and untouched", { skip }, async () => {
  const spec = specFor(A, a.parent, { name: 'private' });
  const { dockerId } = await run(spec);
  const id = spec.containerId;
  // B's own engine knows nothing of it.
  for (const driver of [driverB, driverA]) {
    // ...and A's driver, asked for space B, refuses it too: it checks the labels and the name.
    await rejectsWith(driver.inspect(B, id), 'not_found');
    await rejectsWith(driver.start(B, id), 'not_found');
    await rejectsWith(driver.stop(B, id, 0), 'not_found');
    await rejectsWith(driver.logs(B, id, { tailLines: 10 }), 'not_found');
    await rejectsWith(driver.stats(B, id), 'not_found');
    await rejectsWith(driver.remove(B, id), 'not_found');
    assert.ok(!(await driver.list(B)).some((c) => c.containerId === id));
  }
  const engineB = await t.docker(B);
  await assert.rejects(engineB.getContainer(dockerId).inspect(), (e: { statusCode?: number }) => e.statusCode === 404);
  // The same container id in another space names another container: B creates and removes its own.
  await run({ ...spec, spaceId: B, cgroupParent: b.parent, name: 'bs-own' });
  assert.ok((await driverB.list(B)).some((c) => c.containerId === id && c.name === 'bs-own'));
  await driverB.remove(B, id);
  assert.ok(!(await driverB.list(B)).some((c) => c.containerId === id));
  assert.equal((await driverA.inspect(A, id)).state, 'running');
  assert.ok((await driverA.list(A)).some((c) => c.containerId === id && c.name === 'private' && c.state === 'running'));
});

test('lifecycle: stop, start again, stop twice, remove; then not_found', { skip }, async () => {
  const spec = specFor(A, a.parent, { name: 'cycle' });
  await run(spec);
  const t0 = performance.now();
  await driverA.stop(A, spec.containerId, 5);
  const stopMs = performance.now() - t0;
  assert.ok(
    stopMs < 4000,
    `catatonit forwards SIGTERM, so stop does not wait for the timeout (${Math.round(stopMs)} ms)`,
  );
  assert.equal((await driverA.inspect(A, spec.containerId)).state, 'exited');
  await driverA.stop(A, spec.containerId);
  await driverA.start(A, spec.containerId);
  await driverA.start(A, spec.containerId);
  assert.equal((await driverA.inspect(A, spec.containerId)).state, 'running');
  await driverA.remove(A, spec.containerId);
  await rejectsWith(driverA.inspect(A, spec.containerId), 'not_found');
  await rejectsWith(driverA.remove(A, spec.containerId), 'not_found');
  await rejectsWith(driverA.stop(A, spec.containerId, -1), 'invalid_request');
});

test("image labels cannot claim another space; an image's VOLUMEs need a space mount", { skip }, async () => {
  const tb = await busyboxTarball({ changes: [`LABEL ocs.space=${B}`, 'LABEL ocs.container=ctr_x', 'VOLUME /state'] });
  try {
    await driverA.loadImage(A, 'labelled', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
  const spec = specFor(A, a.parent, { image: 'labelled' });
  await rejectsWith(driverA.create(spec), 'invalid_request', /\/state/);
  const state = await volume('state', a);
  const { dockerId } = await run({ ...spec, mounts: [{ source: state, target: '/state', readOnly: false }] });
  const labels = (await (await t.docker(A)).getContainer(dockerId).inspect()).Config.Labels;
  assert.equal(labels['ocs.space'], A);
  assert.equal(labels['ocs.container'], spec.containerId);
  assert.ok(!(await driverA.list(B)).some((c) => c.containerId === spec.containerId));
  assert.ok((await driverA.list(A)).some((c) => c.containerId === spec.containerId));
});

test('removeImage refuses while a container of the space uses the image', { skip }, async () => {
  const spec = specFor(B, b.parent, { name: 'user' });
  await driverB.create(spec);
  await rejectsWith(driverB.removeImage(B, 'busybox'), 'conflict');
  await driverB.remove(B, spec.containerId);
  // Still there for the other tests; its removal is covered by the image tests.
  assert.equal((await driverB.listImages(B)).length, 1);
});

test("a cgroup parent that does not exist, or is not the space's, is refused", { skip }, async () => {
  await rejectsWith(driverA.create(specFor(A, `${a.parent}/missing`)), 'invalid_request', /does not exist/);
  await rejectsWith(driverA.create(specFor(A, b.parent)), 'invalid_request', /cgroupParent/);
});

/** What the tests read of libpod's container inspect. */
interface LibpodInspect {
  Name: string;
  State: { Pid: number };
  EffectiveCaps: string[];
  BoundingCaps: string[];
  Config: { Labels: Record<string, string> };
  NetworkSettings: { Networks: Record<string, unknown> };
  HostConfig: {
    SecurityOpt: string[];
    Privileged: boolean;
    IDMappings: { UidMap: string[]; GidMap: string[] };
    UsernsMode: string;
    PidMode: string;
    UTSMode: string;
    CgroupMode: string;
    Memory: number;
    MemorySwap: number;
    NanoCpus: number;
    PidsLimit: number;
    CgroupParent: string;
    Devices?: unknown[];
    PortBindings?: Record<string, unknown>;
    PublishAllPorts: boolean;
    ReadonlyRootfs: boolean;
    Init: boolean;
    LogConfig?: { Type: string; Path?: string };
    Ulimits?: { Name: string; Soft: number; Hard: number }[];
  };
}
