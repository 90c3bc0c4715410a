import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectCgroups, parseCgroupMounts } from './detect.js';
import { V1CgroupDriver } from './v1.js';

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
