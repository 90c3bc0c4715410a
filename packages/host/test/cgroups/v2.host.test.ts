/**
 * The v2 driver against the real cgroup2 mount: /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified
 * on a hybrid one, or the group systemd delegated to us (`OCS_CGROUP2_ROOT`, as the production
 * guest sets it: everything is written below it, nothing at the hierarchy's root). Where the
 * kernel does not offer cpu, memory and pids there, the limit tests say so and skip
 * (`OCS_REQUIRE_KERNEL=cgroup-v2` makes that a failure); everything else still runs on the real
 * tree.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelSkip } from '@ocs/host/testing/require-host';
import { parseCgroupMounts } from '#src/cgroups/detect.js';
import { V2CgroupDriver, V2_REQUIRED } from '#src/cgroups/v2.js';
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
  uniquePrefix,
  waitUntil,
  withTimeout,
} from '@ocs/host/testing/cgroups';

const mounts = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.type === 'cgroup2');
const MOUNT = (mounts.find((m) => m.mountPoint === '/sys/fs/cgroup') ?? mounts[0])?.mountPoint;
const ROOT = process.env.OCS_CGROUP2_ROOT ?? MOUNT;
/** A group's path as /proc/PID/cgroup names it: from the hierarchy's root, not ours. */
const fromMount = (path: string) => `${MOUNT && ROOT ? ROOT.slice(MOUNT.length) : ''}/${path}`;
const driver = ROOT ? new V2CgroupDriver({ root: ROOT }) : undefined;
const v2 = () => driver as V2CgroupDriver;
const offered = ROOT ? readFileSync(join(ROOT, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean) : [];
const hasLimits = V2_REQUIRED.every((c) => offered.includes(c));
const NO_LIMITS_WHY = `cgroup v2 cpu/memory/pids controllers not available on this kernel: ${ROOT} offers [${offered.join(' ')}]`;

const skip = await (async () => {
  if (!driver) return kernelSkip('cgroup-v2', 'no cgroup2 mount on this host');
  const probe = uniquePrefix();
  try {
    await driver.create(probe);
    await driver.destroy(probe);
    return false;
  } catch (err) {
    return kernelSkip('cgroup-v2', `the cgroup2 tree at ${ROOT} is not writable here: ${(err as Error).message}`);
  }
})();

const raw = (path: string, file: string) => readFileSync(join(ROOT ?? '/nonexistent', path, file), 'utf8').trim();

const scoped = (t: TestContext) => scopedGroup(t, v2);

test('create nests groups in the real tree and hands down what the kernel offers', { skip }, async (t) => {
  const p = scoped(t);
  const api = `${p}/sp/api`;
  await v2().create(api);
  await v2().create(api);
  assert.ok(statSync(join(ROOT!, api)).isDirectory());
  assert.equal(raw(api, 'cgroup.type'), 'domain');
  assert.deepEqual(await v2().children(p), ['sp']);
  assert.deepEqual(await v2().children(`${p}/sp`), ['api']);
  assert.equal(await v2().exists(api), true);
  assert.equal(await v2().exists(`${p}/nope`), false);
  assert.equal(v2().absolutePath(`${p}/sp/workloads`), `/${p}/sp/workloads`);
  // Every ancestor passes down each required controller its own parent gave it, and nothing else.
  for (const dir of ['', p, `${p}/sp`]) {
    const offers = raw(dir, 'cgroup.controllers').split(/\s+/);
    const enabled = raw(dir, 'cgroup.subtree_control').split(/\s+/).filter(Boolean);
    for (const c of V2_REQUIRED)
      if (offers.includes(c)) assert.ok(enabled.includes(c), `${c} enabled in ${dir || 'the root'}`);
  }
  assert.equal(raw(api, 'cgroup.subtree_control'), '', 'the leaf enables nothing: it holds processes');
  if (!hasLimits) {
    // What the driver does on a kernel without the controllers: refuse, naming them.
    await assert.rejects(v2().create(`${p}/sp/limited`, GOOD_LIMITS), /controllers .*not available.*offers/);
    await assert.rejects(v2().setLimits(api, GOOD_LIMITS), /not available/);
    await assert.rejects(v2().readLimits(api), /not available/);
    await assert.rejects(v2().usage(api), /not available/);
  }
});

test('addProcess moves a process into the group; processes live only in leaves', { skip }, async (t) => {
  const sp = `${scoped(t)}/sp`;
  const api = `${sp}/api`;
  await v2().create(api);
  const held = await sleeperIn(t, v2(), api);
  assert.ok(procsOf(join(ROOT!, api, 'cgroup.procs')).includes(held.pid));
  assert.equal(procCgroup(held.pid, ''), fromMount(api), '/proc/pid/cgroup 0:: line');
  assert.deepEqual(await v2().processes(api), [held.pid]);
  assert.deepEqual(await v2().processes(sp), []);
  await assert.rejects(v2().addProcess(sp, held.pid), /leaf/);
  await assert.rejects(v2().create(`${api}/inner`), /holds processes/);
  assert.equal(await v2().exists(`${api}/inner`), false);
  await assert.rejects(v2().addProcess(`${sp}/missing`, held.pid), /does not exist/);
  for (const bad of [0, -1, 1.5, Number.NaN]) await assertInvalid(v2().addProcess(api, bad), `pid ${bad}`);
});

test(
  'a daemon started at the top of a delegated group moves itself into a leaf with its own limits, and then hands controllers down',
  { skip },
  async (t) => {
    if (!hasLimits) return t.skip(kernelSkip('cgroup-v2', NO_LIMITS_WHY));
    // The group stands in for the one systemd gives the unit: the daemon starts at its top.
    const top = scoped(t);
    await v2().create(top);
    const delegated = { root: join(ROOT!, top), hierarchyPath: fromMount(top) };
    const script = `const { V2CgroupDriver } = await import(${JSON.stringify(import.meta.resolve('#src/cgroups/v2.js'))});
const d = new V2CgroupDriver(${JSON.stringify(delegated)});
process.stdout.write((await d.enterLeaf('daemon', { memoryBytes: 256 * 1024 * 1024, pids: 300 })) + '\\n');
setInterval(() => {}, 1000);`;
    const daemon = spawnHeld(process.execPath, ['--input-type=module', '-e', script]);
    t.after(() => daemon.child.kill('SIGKILL'));
    await v2().addProcess(top, daemon.pid);
    daemon.release();
    // Generous: under TCG (the guest) a Node process takes many seconds to start.
    await waitUntil(
      () => daemon.output().includes('\n'),
      180_000,
      () => `enterLeaf: ${daemon.output()}`,
    );
    assert.equal(daemon.output().trim(), join(ROOT!, top, 'daemon'));
    assert.equal(procCgroup(daemon.pid, ''), fromMount(`${top}/daemon`));
    assert.equal(raw(`${top}/daemon`, 'memory.max'), String(256 * MiB));
    assert.equal(raw(`${top}/daemon`, 'pids.max'), '300');
    for (const c of V2_REQUIRED)
      assert.ok(raw(top, 'cgroup.subtree_control').split(' ').includes(c), `${c} handed down`);
    const d = new V2CgroupDriver(delegated);
    await d.create('ocs.slice/sp/api', { cpuMillicores: 100, memoryBytes: 64 * MiB });
    assert.equal(raw(`${top}/ocs.slice/sp/api`, 'memory.max'), String(64 * MiB));
    assert.equal(d.absolutePath('ocs.slice/sp/containers'), fromMount(`${top}/ocs.slice/sp/containers`));
  },
);

test('destroy kills the whole subtree (cgroup.kill) and removes it bottom-up', { skip }, async (t) => {
  const p = scoped(t);
  const { sp, inside, survivor } = await busySubtree(t, v2(), p);
  assert.ok(existsSync(join(ROOT!, sp, 'cgroup.kill')), 'this kernel has cgroup.kill (5.14+)');
  // Under TCG the forks take their time.
  await waitUntil(
    () => procsOf(join(ROOT!, sp, 'workloads/c1/cgroup.procs')).length >= 3,
    60_000,
    () => 'the forks',
  );
  writeFileSync(join(ROOT!, sp, 'workloads/c2/cgroup.freeze'), '1');
  const pids = ['api', 'workloads/c1', 'workloads/c2'].flatMap((g) => procsOf(join(ROOT!, sp, g, 'cgroup.procs')));
  assert.equal(pids.length, 5);

  await v2().destroy(sp);
  for (const h of inside) assert.equal((await withTimeout(h.exit, 5_000, 'exit')).signal, 'SIGKILL');
  for (const pid of pids) assert.ok(gone(pid), `pid ${pid} is gone`);
  assert.equal(existsSync(join(ROOT!, sp)), false);
  await assertOnlySiblingLeft(v2(), p, sp, survivor);
});

test('limits are written to cpu.max, memory.max, memory.swap.max, pids.max and read back', { skip }, async (t) => {
  if (!hasLimits) return t.skip(kernelSkip('cgroup-v2', NO_LIMITS_WHY));
  const sp = `${scoped(t)}/sp_1`;
  await v2().create(sp, { cpuMillicores: 1500, memoryBytes: 256 * MiB, pids: 100 });
  assert.equal(raw(sp, 'cpu.max'), '150000 100000');
  assert.equal(raw(sp, 'memory.max'), String(256 * MiB));
  if (existsSync(join(ROOT!, sp, 'memory.swap.max'))) assert.equal(raw(sp, 'memory.swap.max'), '0');
  assert.equal(raw(sp, 'pids.max'), '100');
  assert.deepEqual(await v2().readLimits(sp), { cpuMillicores: 1500, memoryBytes: 256 * MiB, pids: 100 });
  await v2().setLimits(sp, { cpuMillicores: 250, memoryBytes: 32 * MiB });
  assert.equal(raw(sp, 'cpu.max'), '25000 100000');
  assert.equal(raw(sp, 'pids.max'), 'max');
  assert.deepEqual(await v2().readLimits(sp), { cpuMillicores: 250, memoryBytes: 32 * MiB });
  await v2().create(`${sp}/api`, GOOD_LIMITS);
  for (const c of V2_REQUIRED) assert.ok(raw(sp, 'cgroup.subtree_control').split(' ').includes(c), `${c} handed down`);
  const u = await v2().usage(sp);
  assert.equal(typeof u.memoryBytes, 'number');
  assert.equal(u.pids, 0);
});

test('the memory limit OOM-kills the hog and only the hog', { skip }, async (t) => {
  if (!hasLimits) return t.skip(kernelSkip('cgroup-v2', NO_LIMITS_WHY));
  const p = scoped(t);
  const [space, other] = [`${p}/sp_a`, `${p}/sp_b`];
  await v2().create(space, { cpuMillicores: 1000, memoryBytes: 256 * MiB, pids: 200 });
  for (const g of [`${space}/api`, `${space}/workloads`, other])
    await v2().create(g, { cpuMillicores: 1000, memoryBytes: 64 * MiB, pids: 100 });
  const sameSpace = await runIn(v2(), `${space}/workloads`, 'exec sleep 600');
  const otherSpace = await runIn(v2(), other, 'exec sleep 600');
  t.after(() => [sameSpace, otherSpace].forEach((h) => h.child.kill('SIGKILL')));
  const hog = spawnHeld(process.execPath, ['-e', hogCode(200)]);
  await v2().addProcess(`${space}/api`, hog.pid);
  hog.release();
  assert.equal((await withTimeout(hog.exit, 60_000, 'the hog to die')).signal, 'SIGKILL', hog.output());
  const oom = (g: string) => Number(/oom_kill (\d+)/.exec(raw(g, 'memory.events'))?.[1]);
  assert.ok(oom(`${space}/api`) >= 1);
  assert.equal(oom(other), 0);
  assert.ok(((await v2().usage(`${space}/api`)).oomKills ?? 0) >= 1);
  assert.ok(alive(sameSpace.pid) && !gone(sameSpace.pid));
  assert.ok(alive(otherSpace.pid) && !gone(otherSpace.pid));
});

test('the pids limit refuses forks beyond it', { skip }, async (t) => {
  if (!hasLimits) return t.skip(kernelSkip('cgroup-v2', NO_LIMITS_WHY));
  const g = `${scoped(t)}/sp/api`;
  await v2().create(g, { ...GOOD_LIMITS, pids: 5 });
  const sh = await runIn(v2(), g, 'i=0; while [ $i -lt 20 ]; do sleep 600 & i=$((i+1)); done; echo all-forked; wait');
  assert.notEqual((await withTimeout(sh.exit, 10_000, 'the shell')).code, 0);
  assert.doesNotMatch(sh.output(), /all-forked/);
  assert.ok(Number(/max (\d+)/.exec(raw(g, 'pids.events'))?.[1]) >= 1);
  assert.ok((await v2().usage(g)).pids <= 5);
});

test('hostile paths and bad limits are refused before anything is touched', { skip }, async (t) => {
  const p = scoped(t);
  await assertHostilePathsRefused(v2());
  for (const limits of BAD_LIMITS)
    await assertInvalid(v2().create(`${p}/x`, limits as never), `create ${JSON.stringify(limits)}`);
  assert.equal(await v2().exists(p), false, 'refused limits create nothing');
});
