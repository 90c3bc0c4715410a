/**
 * The v1 driver against the real kernel (root). Every test works under its own
 * `ocs-test-<random>` group and destroys exactly that in `t.after`.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { detectCgroups } from '#src/cgroups/detect.js';
import type { CgroupDriver } from '#src/cgroups/types.js';
import { V1_DEVICE_RULES } from '#src/cgroups/v1.js';
import {
  BAD_LIMITS,
  GOOD_LIMITS,
  MiB,
  alive,
  assertHostilePathsRefused,
  assertInvalid,
  assertOnlySiblingLeft,
  busySubtree,
  gone,
  hogCode,
  procCgroup,
  procsOf,
  runIn,
  scopedGroup,
  sleeperIn,
  spawnHeld,
  spinCode,
  waitUntil,
  withTimeout,
} from '@ocs/host/testing/cgroups';

const ROOT = '/sys/fs/cgroup';
const detected = await detectCgroups().catch((e: Error) => e);
const driver = !(detected instanceof Error) && detected.version === 'v1' ? detected : undefined;
const skip = driver
  ? false
  : `cgroup v1 is not in use on this host (${detected instanceof Error ? detected.message : detected.version})`;
const v1 = () => driver as CgroupDriver;
/** The controller hierarchies mounted here (cpu and cpuacct are separate mounts on this machine). */
const CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'cpuset', 'pids', 'blkio', 'devices', 'freezer'].filter((c) =>
  existsSync(join(ROOT, c, 'cgroup.procs')),
);

const raw = (ctrl: string, path: string, file: string) => readFileSync(join(ROOT, ctrl, path, file), 'utf8').trim();

const scoped = (t: TestContext) => scopedGroup(t, v1);

test('limits are written to the kernel files and read back', { skip }, async (t) => {
  const sp = `${scoped(t)}/sp_1`;
  await v1().create(sp, { cpuMillicores: 1500, memoryBytes: 256 * MiB, pids: 100 });
  assert.equal(raw('memory', sp, 'memory.limit_in_bytes'), String(256 * MiB));
  if (existsSync(join(ROOT, 'memory', sp, 'memory.memsw.limit_in_bytes'))) {
    assert.equal(
      raw('memory', sp, 'memory.memsw.limit_in_bytes'),
      String(256 * MiB),
      'no swap beyond the memory limit',
    );
  }
  assert.equal(raw('memory', sp, 'memory.swappiness'), '0');
  assert.equal(raw('cpu', sp, 'cpu.cfs_period_us'), '100000');
  assert.equal(raw('cpu', sp, 'cpu.cfs_quota_us'), '150000');
  assert.equal(raw('pids', sp, 'pids.max'), '100');
  assert.deepEqual(raw('devices', sp, 'devices.list').split('\n'), [...V1_DEVICE_RULES]);
  assert.equal(raw('cpuset', sp, 'cpuset.cpus'), raw('cpuset', '', 'cpuset.cpus'), 'cpuset copied from the parent');
  assert.equal(raw('cpuset', sp, 'cpuset.mems'), raw('cpuset', '', 'cpuset.mems'));
  assert.deepEqual(await v1().readLimits(sp), { cpuMillicores: 1500, memoryBytes: 256 * MiB, pids: 100 });

  // Lowering writes memory before memsw, raising the other way round; no pids means "max".
  await v1().setLimits(sp, { cpuMillicores: 250, memoryBytes: 32 * MiB });
  assert.equal(raw('memory', sp, 'memory.limit_in_bytes'), String(32 * MiB));
  assert.equal(raw('cpu', sp, 'cpu.cfs_quota_us'), '25000');
  assert.equal(raw('pids', sp, 'pids.max'), 'max');
  assert.deepEqual(await v1().readLimits(sp), { cpuMillicores: 250, memoryBytes: 32 * MiB });
  await v1().setLimits(sp, { cpuMillicores: 2000, memoryBytes: 512 * MiB, pids: 10 });
  assert.equal(raw('memory', sp, 'memory.limit_in_bytes'), String(512 * MiB));
  if (existsSync(join(ROOT, 'memory', sp, 'memory.memsw.limit_in_bytes')))
    assert.equal(raw('memory', sp, 'memory.memsw.limit_in_bytes'), String(512 * MiB));
  assert.equal(raw('cpu', sp, 'cpu.cfs_quota_us'), '200000');
  assert.equal(raw('pids', sp, 'pids.max'), '10');

  // Idempotent, creates missing parents, and a child inherits the device list.
  await v1().create(`${sp}/api`, GOOD_LIMITS);
  await v1().create(`${sp}/api`, GOOD_LIMITS);
  await v1().create(sp, { cpuMillicores: 2000, memoryBytes: 512 * MiB, pids: 10 });
  assert.deepEqual(raw('devices', `${sp}/api`, 'devices.list').split('\n'), [...V1_DEVICE_RULES]);
  for (const ctrl of CONTROLLERS)
    assert.ok(statSync(join(ROOT, ctrl, sp, 'api')).isDirectory(), `${ctrl} group exists`);
  assert.deepEqual(await v1().children(sp), ['api']);
  assert.equal(await v1().exists(`${sp}/api`), true);
  assert.equal(await v1().exists(`${sp}/nope`), false);
  assert.equal(v1().absolutePath(`${sp}/workloads`), `/${sp}/workloads`);
});

test('addProcess puts a process in every controller group; processes() lists this group only', { skip }, async (t) => {
  const sp = `${scoped(t)}/sp`;
  const api = `${sp}/api`;
  await v1().create(api, GOOD_LIMITS);
  const held = await sleeperIn(t, v1(), api);
  for (const ctrl of CONTROLLERS) {
    assert.ok(
      procsOf(join(ROOT, ctrl, api, 'cgroup.procs')).includes(held.pid),
      `${ctrl}/${api}/cgroup.procs has the pid`,
    );
    assert.equal(procCgroup(held.pid, ctrl), `/${api}`, `/proc/pid/cgroup for ${ctrl}`);
  }
  assert.deepEqual(await v1().processes(api), [held.pid]);
  assert.deepEqual(await v1().processes(sp), []);
  assert.equal((await v1().usage(api)).pids, 1);
  assert.equal((await v1().usage(sp)).pids, 1, 'usage counts descendants');
  await assert.rejects(v1().addProcess(`${sp}/missing`, held.pid), /does not exist/);
  for (const bad of [0, -1, 1.5, Number.NaN]) await assertInvalid(v1().addProcess(api, bad), `pid ${bad}`);
});

test('processes live only in leaves', { skip }, async (t) => {
  const sp = `${scoped(t)}/sp`;
  await v1().create(`${sp}/api`, GOOD_LIMITS);
  const held = await runIn(v1(), `${sp}/api`, 'exec sleep 600');
  t.after(() => held.child.kill('SIGKILL'));
  await assert.rejects(v1().addProcess(sp, held.pid), /leaf/);
  await assert.rejects(v1().create(`${sp}/api/inner`), /holds processes/);
  assert.equal(await v1().exists(`${sp}/api/inner`), false);
});

test('the memory limit OOM-kills the hog and only the hog', { skip }, async (t) => {
  const p = scoped(t);
  const [space, other] = [`${p}/sp_a`, `${p}/sp_b`];
  await v1().create(space, { cpuMillicores: 1000, memoryBytes: 256 * MiB, pids: 200 });
  await v1().create(`${space}/api`, { cpuMillicores: 1000, memoryBytes: 64 * MiB, pids: 100 });
  await v1().create(`${space}/workloads`, { cpuMillicores: 1000, memoryBytes: 64 * MiB, pids: 100 });
  await v1().create(other, { cpuMillicores: 1000, memoryBytes: 64 * MiB, pids: 100 });
  const sameSpace = await runIn(v1(), `${space}/workloads`, 'exec sleep 600');
  const otherSpace = await runIn(v1(), other, 'exec sleep 600');
  t.after(() => [sameSpace, otherSpace].forEach((h) => h.child.kill('SIGKILL')));

  const hog = spawnHeld(process.execPath, ['-e', hogCode(200)]);
  await v1().addProcess(`${space}/api`, hog.pid);
  hog.release();
  const { signal } = await withTimeout(hog.exit, 60_000, 'the hog to die');
  assert.equal(signal, 'SIGKILL', `hog output: ${hog.output()}`);
  assert.doesNotMatch(hog.output(), /survived/);

  const oom = (path: string) => Number(/oom_kill (\d+)/.exec(raw('memory', path, 'memory.oom_control'))?.[1]);
  assert.ok(oom(`${space}/api`) >= 1, 'memory.oom_control counts the kill');
  // memory.failcnt stays 0 on this 6.18 kernel even here, so the peak shows the limit was hit.
  assert.ok(Number(raw('memory', `${space}/api`, 'memory.max_usage_in_bytes')) > 60 * MiB, 'the limit was reached');
  assert.equal(oom(`${space}/workloads`), 0);
  assert.equal(oom(other), 0);
  const usage = await v1().usage(`${space}/api`);
  assert.ok((usage.oomKills ?? 0) >= 1);
  assert.ok(
    (usage.memoryPeakBytes ?? 0) > 60 * MiB && (usage.memoryPeakBytes ?? 0) <= 64 * MiB,
    `peak ${usage.memoryPeakBytes}`,
  );
  assert.ok(alive(sameSpace.pid) && !gone(sameSpace.pid), 'the same space’s other group lives');
  assert.ok(alive(otherSpace.pid) && !gone(otherSpace.pid), 'the sibling space lives');
});

test('the pids limit refuses forks beyond it', { skip }, async (t) => {
  const g = `${scoped(t)}/sp/api`;
  await v1().create(g, { ...GOOD_LIMITS, pids: 5 });
  const sh = await runIn(v1(), g, 'i=0; while [ $i -lt 20 ]; do sleep 600 & i=$((i+1)); done; echo all-forked; wait');
  const { code } = await withTimeout(sh.exit, 10_000, 'the shell to give up');
  assert.notEqual(code, 0);
  assert.match(sh.output(), /fork/i);
  assert.doesNotMatch(sh.output(), /all-forked/);
  assert.ok(Number(/max (\d+)/.exec(raw('pids', g, 'pids.events'))?.[1]) >= 1, 'pids.events counts refusals');
  assert.ok((await v1().usage(g)).pids <= 5);
  assert.ok((await v1().processes(g)).length <= 5);
});

test('the cpu quota throttles a busy process', { skip }, async (t) => {
  const g = `${scoped(t)}/sp/api`;
  await v1().create(g, { ...GOOD_LIMITS, cpuMillicores: 200 });
  const spin = spawnHeld(process.execPath, ['-e', spinCode(1500)]);
  await v1().addProcess(g, spin.pid);
  spin.release();
  await withTimeout(spin.exit, 30_000, 'the spinner');
  const used = (await v1().usage(g)).cpuUsageNs ?? Number.NaN;
  // Unthrottled it would use ~1.5 s of CPU; at 20 % about 0.3 s plus throttled start-up.
  assert.ok(used < 0.8e9, `cpu used ${used / 1e9} s`);
  assert.ok(Number(/nr_throttled (\d+)/.exec(raw('cpu', g, 'cpu.stat'))?.[1]) > 0, 'cpu.stat counts throttling');
});

test('devices outside the allow-list cannot be opened from inside the group', { skip }, async (t) => {
  const g = `${scoped(t)}/sp/api`;
  await v1().create(g, GOOD_LIMITS);
  const script =
    ': </dev/null && echo null-ok; : </dev/urandom && echo urandom-ok; : </dev/kmsg && echo kmsg-opened; true';
  const outside = spawnHeld('/bin/sh', ['-c', script]);
  outside.release();
  await outside.exit;
  assert.match(outside.output(), /kmsg-opened/, 'control: root opens /dev/kmsg outside the group');
  const inside = await runIn(v1(), g, script);
  await withTimeout(inside.exit, 10_000, 'the shell');
  assert.match(inside.output(), /null-ok/);
  assert.match(inside.output(), /urandom-ok/);
  assert.doesNotMatch(inside.output(), /kmsg-opened/);
  assert.match(inside.output(), /Operation not permitted/);
});

test('groups made at once under a new parent all get the device allow-list, the parent too', { skip }, async (t) => {
  // The kernel refuses deny-all on a devices group that already has children: made at once,
  // the groups must not race to restrict their shared parent.
  const p = `${scoped(t)}/parent`;
  const kids = Array.from({ length: 20 }, (_, i) => `${p}/sp_${i}`);
  await Promise.all(kids.map((k) => v1().create(k, GOOD_LIMITS)));
  for (const g of [p, ...kids]) {
    assert.deepEqual(raw('devices', g, 'devices.list').split('\n').sort(), [...V1_DEVICE_RULES].sort(), g);
  }
});

test('destroy kills everything below the group and leaves no directory in any hierarchy', { skip }, async (t) => {
  const p = scoped(t);
  const { sp, inside, survivor } = await busySubtree(t, v1(), p, GOOD_LIMITS);
  await waitUntil(
    () => procsOf(join(ROOT, 'memory', sp, 'workloads/c1/cgroup.procs')).length >= 3,
    5_000,
    () => 'the forks',
  );
  // Frozen on its own, as `docker pause` leaves a container: destroy must still get through.
  if (CONTROLLERS.includes('freezer')) writeFileSync(join(ROOT, 'freezer', sp, 'workloads/c2/freezer.state'), 'FROZEN');
  const pids = CONTROLLERS.flatMap((c) =>
    ['api', 'workloads/c1', 'workloads/c2'].flatMap((g) => procsOf(join(ROOT, c, sp, g, 'cgroup.procs'))),
  );

  await v1().destroy(sp);
  for (const h of inside) assert.equal((await withTimeout(h.exit, 5_000, 'exit')).signal, 'SIGKILL');
  for (const pid of new Set(pids)) assert.ok(gone(pid), `pid ${pid} is gone`);
  for (const dir of readdirSync(ROOT)) assert.equal(existsSync(join(ROOT, dir, sp)), false, `${dir}/${sp} removed`);
  assert.equal(await v1().exists(sp), false);
  await assertOnlySiblingLeft(v1(), p, sp, survivor);
});

test('hostile paths and bad limits are refused before anything is touched', { skip }, async (t) => {
  const p = scoped(t);
  await assertHostilePathsRefused(v1());
  for (const dir of ['x', 'etc', 'b'])
    assert.equal(existsSync(join(ROOT, dir)), false, `nothing escaped to ${ROOT}/${dir}`);
  for (const limits of BAD_LIMITS) {
    await assertInvalid(v1().create(`${p}/x`, limits as never), `create with ${JSON.stringify(limits)}`);
  }
  assert.equal(await v1().exists(p), false, 'refused limits create nothing');
  await v1().create(`${p}/x`);
  for (const limits of BAD_LIMITS)
    await assertInvalid(v1().setLimits(`${p}/x`, limits as never), `setLimits ${JSON.stringify(limits)}`);
});
