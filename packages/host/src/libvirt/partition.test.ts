/** Which cgroup partitions libvirt keeps verbatim, and creating the missing directories. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ensurePartition, libvirtHierarchies, partitionProblem } from './partition.js';

test('only paths libvirt keeps verbatim are accepted', () => {
  for (const ok of [
    '/ocs.slice/sp_a.space/vms.partition',
    '/machine.x',
    '/a.b/c-d.e_f',
    '/ocs-test-1a.slice/sp_t1.space/vms.partition',
  ]) {
    assert.equal(partitionProblem(ok), undefined, ok);
  }
  const bad = [
    '/ocs/sp_a/vms', // libvirt: /ocs.partition/sp_a.partition/vms.partition
    '/ocs.slice/sp_a/vms.partition', // one dotless component is enough to move it
    '/machine', // kept by libvirt, but it is its own default: omit the partition instead
    'ocs.slice/x.y', // relative
    '/ocs.slice//x.y',
    '/ocs.slice/../x.y',
    '/ocs.slice/x.y/',
    '/_x.y', // libvirt escapes a leading "_"
    '/.x.y',
    '/cpu.x', // starts like a controller file: escaped to "_cpu.x"
    '/memory.limit',
    '/cgroup.procs',
    '/a b.c',
    '/' + Array.from({ length: 17 }, (_, i) => `p${i}.x`).join('/'),
  ];
  for (const p of bad) assert.notEqual(partitionProblem(p), undefined, p);
  assert.notEqual(partitionProblem(42), undefined);
});

test('ensurePartition creates only what is missing, in every hierarchy given', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ocs-partition-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const [h1, h2] = [join(root, 'memory'), join(root, 'unified')];
  await mkdir(join(h1, 'ocs.slice', 'sp_a.space'), { recursive: true });
  await mkdir(h2);
  const made = await ensurePartition('/ocs.slice/sp_a.space/vms.partition', [h1, h2]);
  assert.deepEqual(made, [
    join(h1, 'ocs.slice/sp_a.space/vms.partition'),
    join(h2, 'ocs.slice'),
    join(h2, 'ocs.slice/sp_a.space'),
    join(h2, 'ocs.slice/sp_a.space/vms.partition'),
  ]);
  assert.deepEqual(await ensurePartition('/ocs.slice/sp_a.space/vms.partition', [h1, h2]), [], 'idempotent');
  await assert.rejects(ensurePartition('/ocs/sp_a/vms', [h1]));
  assert.ok(!existsSync(join(h1, 'ocs')));
});

test('an existing group is left as it is (cpuset copying of new groups is exercised on real cgroupfs by driver-boot)', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ocs-partition-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await writeFile(join(root, 'cpuset.cpus'), '0-1\n');
  await writeFile(join(root, 'cpuset.mems'), '0\n');
  await mkdir(join(root, 'a.b'));
  await writeFile(join(root, 'a.b', 'cpuset.cpus'), '\n');
  await writeFile(join(root, 'a.b', 'cpuset.mems'), '\n');
  await ensurePartition('/a.b', [root]); // exists: untouched
  assert.equal(await readFile(join(root, 'a.b', 'cpuset.cpus'), 'utf8'), '\n');
});

test('the hierarchies libvirt uses are read from the mount table', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ocs-partition-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const mountinfo = join(dir, 'mountinfo');
  await writeFile(
    mountinfo,
    [
      '30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory',
      '31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids',
      '32 25 0:28 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup cgroup rw,name=systemd',
      '33 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw',
      '34 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct',
      '',
    ].join('\n'),
  );
  assert.deepEqual(await libvirtHierarchies(mountinfo), [
    '/sys/fs/cgroup/memory',
    '/sys/fs/cgroup/unified',
    '/sys/fs/cgroup/cpu,cpuacct',
  ]);
});
