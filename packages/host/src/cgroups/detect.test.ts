import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectCgroups, parseCgroupMounts, unifiedGroupOf } from './detect.js';
import { V1CgroupDriver } from './v1.js';
import { V2CgroupDriver } from './v2.js';

const mounts = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'));

test('the mount table parse finds what mount(8) shows', () => {
  const fromMount = execFileSync('mount', [], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => / type cgroup2? /.test(l))
    .map((l) => l.split(' ')[2]);
  assert.deepEqual(mounts.map((m) => m.mountPoint).sort(), fromMount.sort());
});

test('mountinfo escapes and co-mounted controllers are understood', () => {
  const text = [
    '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct',
    '41 31 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate',
    '50 31 0:40 / /proc rw - proc proc rw',
  ].join('\n');
  assert.deepEqual(parseCgroupMounts(text), [
    { mountPoint: '/sys/fs/cgroup/cpu,cpuacct', type: 'cgroup', options: ['rw', 'cpu', 'cpuacct'] },
    { mountPoint: '/mnt/with space', type: 'cgroup2', options: [] },
  ]);
});

test('detection picks the driver this host supports', async () => {
  const rootIsV2 = mounts.some((m) => m.type === 'cgroup2' && m.mountPoint === '/sys/fs/cgroup');
  const offered = rootIsV2 ? readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8') : '';
  const expectV2 = rootIsV2 && ['cpu', 'memory', 'pids'].every((c) => offered.split(/\s+/).includes(c));
  const driver = await detectCgroups();
  assert.equal(driver.version, expectV2 ? 'v2' : 'v1');
  if (driver instanceof V1CgroupDriver)
    console.log(
      '# this host: cgroup v1 (hybrid; cgroup2 mounted as',
      mounts.find((m) => m.type === 'cgroup2')?.mountPoint,
      ')',
    );
});

test('a cgroup2 root without cpu/memory/pids, or a plain directory, is refused with what was found', async () => {
  const unified = mounts.find((m) => m.type === 'cgroup2' && m.mountPoint !== '/sys/fs/cgroup');
  if (unified) {
    const offers = readFileSync(join(unified.mountPoint, 'cgroup.controllers'), 'utf8').trim();
    if (!['cpu', 'memory', 'pids'].every((c) => offers.split(/\s+/).includes(c))) {
      await assert.rejects(detectCgroups({ root: unified.mountPoint }), (e: Error) =>
        e.message.includes(`offers [${offers}]`),
      );
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'ocs-cg-detect-'));
  try {
    await assert.rejects(
      detectCgroups({ root: dir }),
      /no usable cgroups under .*no cgroup2 mount.*v1 controllers mounted: \[\]/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a process's unified group is read from /proc/PID/cgroup; a path outside our namespace is not a root", () => {
  assert.equal(unifiedGroupOf('0::/\n'), '/');
  assert.equal(unifiedGroupOf('0::/system.slice/ocs-node.service\n'), '/system.slice/ocs-node.service');
  assert.equal(unifiedGroupOf('12:memory:/\n1:name=systemd:/x\n0::/a.slice/b\n'), '/a.slice/b');
  assert.equal(unifiedGroupOf('12:memory:/\n'), undefined, 'v1 only');
  assert.equal(unifiedGroupOf('0::/../../outside\n'), undefined);
  assert.equal(unifiedGroupOf('0::/gone (deleted)\n'), undefined);
  assert.equal(unifiedGroupOf(readFileSync('/proc/self/cgroup', 'utf8'))?.startsWith('/'), true);
});

test('on cgroup v2 the driver is rooted in the group this process was started in, and names absolute paths to engines', async () => {
  // A stand-in mount: a directory the mount table says is cgroup2, and a self-cgroup file.
  const dir = mkdtempSync(join(tmpdir(), 'ocs-cg-detect-'));
  try {
    const svc = join(dir, 'system.slice', 'ocs-node.service');
    mkdirSync(svc, { recursive: true });
    writeFileSync(join(svc, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    writeFileSync(join(dir, 'mountinfo'), `30 1 0:26 / ${dir} rw - cgroup2 cgroup2 rw,nsdelegate\n`);
    writeFileSync(join(dir, 'self'), '0::/system.slice/ocs-node.service\n');
    const d = await detectCgroups({ root: dir, mountinfo: join(dir, 'mountinfo'), selfCgroup: join(dir, 'self') });
    assert.ok(d instanceof V2CgroupDriver);
    assert.equal(d.root, svc);
    assert.equal(d.delegated, true);
    assert.equal(
      d.absolutePath('ocs.slice/sp_a/containers'),
      '/system.slice/ocs-node.service/ocs.slice/sp_a/containers',
    );
    // A group without the controllers (no Delegate=yes) is refused, and the message says so.
    writeFileSync(join(svc, 'cgroup.controllers'), 'memory pids\n');
    await assert.rejects(
      detectCgroups({ root: dir, mountinfo: join(dir, 'mountinfo'), selfCgroup: join(dir, 'self') }),
      /cgroup2 at .*ocs-node\.service offers \[memory pids\].*Delegate=yes/,
    );
    // At the hierarchy's root the driver is the mount itself.
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu memory pids\n');
    writeFileSync(join(dir, 'self'), '0::/\n');
    const r = await detectCgroups({ root: dir, mountinfo: join(dir, 'mountinfo'), selfCgroup: join(dir, 'self') });
    assert.ok(r instanceof V2CgroupDriver);
    assert.equal(r.root, dir);
    assert.equal(r.delegated, false);
    assert.equal(r.absolutePath('ocs.slice/sp_a/containers'), '/ocs.slice/sp_a/containers');
    assert.equal(
      await r.enterLeaf('daemon', { memoryBytes: 1 << 30, pids: 100 }),
      undefined,
      'nothing moves at the root',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
