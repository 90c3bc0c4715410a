/**
 * The driver against the real libvirtd, without waiting for guests to boot: listing and removal
 * by space, refusals, and files changed behind the driver's back. Each test uses its own space
 * ids and scratch directory and removes exactly those.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { link, mkdir, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTestGuest } from '@ocs/host/testing/test-guest';
import {
  assertOcsError,
  cleanupSpace,
  kernelSpec,
  libvirtSkipReason,
  qemuPid,
  scratchDir,
  suiteVmDriver,
  uniqueSpaceId,
  waitFor,
} from '@ocs/host/testing/libvirt';

const skip = await libvirtSkipReason();
const suite = suiteVmDriver(skip);
const d = suite.driver;

test(
  'state, listAllSpaces (running domains) and removeAllForSpace see exactly their own space',
  { skip, timeout: 120_000 },
  async (t) => {
    const a = uniqueSpaceId();
    const b = uniqueSpaceId();
    cleanupSpace(t, d, a);
    cleanupSpace(t, d, b);
    const dir = await scratchDir(t);
    const guest = await buildTestGuest(dir, 'hang');
    await d().define(kernelSpec(a, 'vm_1', dir, guest));
    await d().define(kernelSpec(a, 'vm_2', dir, guest));
    await d().define(kernelSpec(b, 'vm_1', dir, guest));
    await d().start(a, 'vm_2');
    const pid = await qemuPid(a, 'vm_2');

    assert.equal(await d().state(a, 'vm_1'), 'defined');
    assert.equal(await d().state(a, 'vm_2'), 'running');
    assert.equal(await d().state(b, 'vm_1'), 'defined');
    // libvirt holds only what runs (transient domains); definitions are in the spaces' storage.
    const all = await d().listAllSpaces();
    assert.deepEqual(all.get(a), ['vm_2']);
    assert.equal(all.has(b), false);

    await d().removeAllForSpace(a);
    await assertOcsError(d().state(a, 'vm_1'), 'not_found');
    assert.equal((await d().listAllSpaces()).has(a), false);
    await assertOcsError(d().state(a, 'vm_2'), 'not_found');
    await waitFor('the running VM of the removed space to be gone', async () => !existsSync(`/proc/${pid}`), 10_000);
    assert.equal(await d().state(b, 'vm_1'), 'defined', 'the other space is untouched');
    await d().removeAllForSpace(a); // idempotent
  },
);

test('define refuses bad files and duplicates; unknown VMs are not_found', { skip, timeout: 60_000 }, async (t) => {
  const sp = uniqueSpaceId();
  cleanupSpace(t, d, sp);
  const dir = await scratchDir(t);
  const guest = await buildTestGuest(dir, 'hang');
  const spec = (vmId: string, extra = {}) => kernelSpec(sp, vmId, dir, guest, extra);
  const bootWith = (kernel: string) => ({ boot: { kind: 'kernel' as const, kernel, initrd: guest.initrd } });

  await symlink(guest.kernel, join(dir, 'kernel-link'));
  await assertOcsError(
    d().define(spec('vm_a', bootWith(join(dir, 'kernel-link')))),
    'invalid_request',
    /symbolic link/,
  );
  await symlink(dir, join(dir, 'dir-link'));
  await assertOcsError(
    d().define(spec('vm_a', bootWith(join(dir, 'dir-link', 'vmlinuz')))),
    'invalid_request',
    /symbolic link/,
  );
  await assertOcsError(d().define(spec('vm_a', bootWith(join(dir, 'missing')))), 'invalid_request', /does not exist/);
  await mkdir(join(dir, 'a-dir'));
  await assertOcsError(d().define(spec('vm_a', bootWith(join(dir, 'a-dir')))), 'invalid_request', /regular file/);

  // A qcow2 image that names a backing file would make QEMU open a path nobody checked.
  await writeFile(join(dir, 'base.raw'), Buffer.alloc(1024 * 1024));
  const img = spawnSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    join(dir, 'base.raw'),
    '-F',
    'raw',
    join(dir, 'over.qcow2'),
  ]);
  assert.equal(img.status, 0, String(img.stderr));
  await assertOcsError(
    d().define(spec('vm_a', { diskPath: join(dir, 'over.qcow2') })),
    'invalid_request',
    /backing file/,
  );

  // A console log hard-linked to another file would have that file truncated by libvirt.
  await writeFile(join(dir, 'other'), 'x');
  await link(join(dir, 'other'), join(dir, 'linked.log'));
  await assertOcsError(
    d().define(spec('vm_a', { consoleLogPath: join(dir, 'linked.log') })),
    'invalid_request',
    /single link/,
  );

  await assertOcsError(
    d().define(spec('vm_a', { storageRoot: join(dir, 'a-dir') })),
    'invalid_request',
    /inside storageRoot/,
  );
  await assertOcsError(d().define(spec('vm_a', { vcpus: 0 })), 'invalid_request');
  await assertOcsError(
    d().define(spec('vm_a', { cgroupPartition: '/ocs/sp_x/vms' })),
    'invalid_request',
    /libvirt renames/,
  );
  assert.equal((await d().listAllSpaces()).has(sp), false, 'nothing reached libvirt');

  await d().define(spec('vm_a'));
  await assertOcsError(d().define(spec('vm_a')), 'conflict');
  assert.equal((await d().readConsole(sp, 'vm_a', { tailBytes: 100 })).text, '', 'never started: empty log');
  await assertOcsError(d().readConsole(sp, 'vm_a', { tailBytes: 0 }), 'invalid_request');

  for (const op of [
    () => d().state(sp, 'vm_none'),
    () => d().start(sp, 'vm_none'),
    () => d().stop(sp, 'vm_none'),
    () => d().undefine(sp, 'vm_none'),
    () => d().dumpXml(sp, 'vm_none'),
    () => d().readConsole(sp, 'vm_none', { tailBytes: 10 }),
  ]) {
    await assertOcsError(op(), 'not_found');
  }
  await assertOcsError(d().state(sp, 'VM-1'), 'invalid_request');
  await assertOcsError(d().state('sp_BAD', 'vm_1'), 'invalid_request');
});

test('files swapped for links after define are refused, not followed', { skip, timeout: 60_000 }, async (t) => {
  const sp = uniqueSpaceId();
  cleanupSpace(t, d, sp);
  const dir = await scratchDir(t);
  const guest = await buildTestGuest(dir, 'hang');
  const spec = kernelSpec(sp, 'vm_swap', dir, guest);
  await d().define(spec);

  // The owner replaces the kernel with a link to a host file: start refuses, the file is untouched.
  const target = join(dir, 'host-secret');
  await writeFile(target, 'secret', { mode: 0o600 });
  const kernelBackup = join(dir, 'vmlinuz.real');
  await link(guest.kernel, kernelBackup);
  await unlink(guest.kernel);
  await symlink(target, guest.kernel);
  await assertOcsError(d().start(sp, 'vm_swap'), 'conflict', /symbolic link/);
  assert.equal(await d().state(sp, 'vm_swap'), 'defined');
  assert.equal((await stat(target)).uid, 0);

  // The console log becomes a link to a host file: reading it is refused, and so is starting.
  await unlink(guest.kernel);
  await link(kernelBackup, guest.kernel);
  await symlink(target, spec.consoleLogPath);
  await assertOcsError(d().readConsole(sp, 'vm_swap', { tailBytes: 100 }), 'conflict');
  await assertOcsError(d().start(sp, 'vm_swap'), 'invalid_request', /single link|regular file/);
  assert.equal(await d().state(sp, 'vm_swap'), 'defined');
});

test(
  'a disk-booted VM starts with its disk as vda; libvirt gives the disk back to its owner after stop',
  { skip, timeout: 60_000 },
  async (t) => {
    const sp = uniqueSpaceId();
    cleanupSpace(t, d, sp);
    const dir = await scratchDir(t);
    const disk = join(dir, 'boot.raw');
    await writeFile(disk, Buffer.alloc(4 * 1024 * 1024), { mode: 0o600 }); // blank: SeaBIOS finds nothing to boot, and waits
    await d().define({
      spaceId: sp,
      vmId: 'vm_disk',
      name: 'disk-vm',
      vcpus: 1,
      memoryBytes: 128 * 1024 * 1024,
      boot: { kind: 'disk', disk },
      consoleLogPath: join(dir, 'console.log'),
    });
    await d().start(sp, 'vm_disk');
    assert.equal(await d().state(sp, 'vm_disk'), 'running');
    const xml = await d().dumpXml(sp, 'vm_disk');
    assert.match(xml, /<boot dev='hd'\/>/);
    assert.match(xml, new RegExp(`<driver name='qemu' type='raw'/>\\s*<source file='${disk}'[^>]*/?>`));
    assert.match(xml, /<target dev='vda' bus='virtio'\/>/);
    assert.ok(!xml.includes('<kernel>'));
    await d().stop(sp, 'vm_disk', { graceSeconds: 0 });
    assert.equal(await d().state(sp, 'vm_disk'), 'shutoff');
    assert.equal((await stat(disk)).uid, 0, "libvirt's relabelling was undone");
  },
);
