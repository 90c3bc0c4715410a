/**
 * The driver against the real libvirtd (TCG here): tiny guests built at test time from
 * Debian's kernel and busybox boot, print a marker on the serial console and then power off,
 * wait for the power button, ignore it or panic. Each test uses its own space id, scratch
 * directory and cgroup, and removes exactly those.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { detectCgroups } from '#src/cgroups/index.js';
import { buildTestGuest } from '@ocs/host/testing/test-guest';
import {
  MiB,
  assertOcsError,
  cleanupSpace,
  kernelSpec,
  libvirtSkipReason,
  procCgroups,
  qemuPid,
  scratchDir,
  suiteVmDriver,
  uniqueSpaceId,
  waitFor,
  waitForConsole,
} from '@ocs/host/testing/libvirt';
import { readDomainFacts } from '#src/libvirt/xml-read.js';

const skip = await libvirtSkipReason();
const suite = suiteVmDriver(skip);
const d = suite.driver;

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A space cgroup made by the project's cgroup driver (v1 hosts), with limits, under a private
 * dotted top group so libvirt takes the partition verbatim; destroyed when the test ends.
 */
async function spaceCgroup(
  t: TestContext,
  spaceId: string,
): Promise<{ partition: string; spacePath: string } | undefined> {
  const cgroups = await detectCgroups().catch(() => undefined);
  if (cgroups?.version !== 'v1') return undefined;
  const top = `ocs-test-${randomBytes(5).toString('hex')}.slice`;
  const spacePath = `${top}/${spaceId}.space`;
  await cgroups.create(spacePath, { cpuMillicores: 2000, memoryBytes: 2048 * MiB });
  t.after(() => cgroups.destroy(top));
  return { partition: `/${spacePath}/vms.partition`, spacePath };
}

test(
  'a kernel boots to its console marker; live XML, state and cgroup are as asked; stop is graceful',
  { skip, timeout: 180_000 },
  async (t) => {
    const spaceId = uniqueSpaceId();
    const vmId = 'vm_boot';
    cleanupSpace(t, d, spaceId);
    const dir = await scratchDir(t);
    const cg = await spaceCgroup(t, spaceId);
    const guest = await buildTestGuest(dir, 'acpi');
    const spec = kernelSpec(spaceId, vmId, dir, guest, {
      vcpus: 2,
      memoryBytes: 320 * MiB,
      ...(cg ? { cgroupPartition: cg.partition } : {}),
    });
    await d().define(spec);
    assert.equal(await d().state(spaceId, vmId), 'defined');

    const t0 = Date.now();
    await d().start(spaceId, vmId);
    await waitForConsole(d(), spaceId, vmId, guest.bootMarker);
    t.diagnostic(`boot to marker: ${Date.now() - t0} ms; accelerator ${d().accelerator} (${d().acceleratorReason})`);
    await waitForConsole(d(), spaceId, vmId, guest.readyMarker);
    assert.equal(await d().state(spaceId, vmId), 'running');

    // The live XML, as libvirt runs it (it has an id), not our input.
    const xml = await d().dumpXml(spaceId, vmId);
    assert.match(xml, new RegExp(`^<domain type='${d().accelerator === 'kvm' ? 'kvm' : 'qemu'}' id='\\d+'`));
    assert.match(xml, /<memory unit='KiB'>327680<\/memory>/);
    assert.match(xml, /<vcpu placement='static'>2<\/vcpu>/);
    for (const banned of [
      '<graphics',
      '<video',
      '<interface',
      '<hostdev',
      '<filesystem',
      '<redirdev',
      '<sound',
      "type='pty'",
      "model='piix3-uhci'",
    ]) {
      assert.ok(!xml.includes(banned), `live XML has no ${banned}`);
    }
    assert.match(xml, new RegExp(`<serial type='file'>\\s*<source path='${escapeRe(spec.consoleLogPath)}'/>`));
    assert.match(
      xml,
      new RegExp(
        `<console type='file'>\\s*<source path='${escapeRe(spec.consoleLogPath)}'/>\\s*<target type='serial' port='0'/>`,
      ),
    );
    const facts = readDomainFacts(xml);
    assert.equal(facts.metadata?.space, spaceId);
    assert.equal(facts.metadata?.vm, vmId);
    assert.equal(facts.metadata?.kernel, guest.kernel);

    assert.equal(await d().state(spaceId, vmId), 'running');
    assert.deepEqual((await d().listAllSpaces()).get(spaceId), [vmId]);

    // Where the kernel put QEMU, read from the live process.
    const pid = await qemuPid(spaceId, vmId);
    const placed = await procCgroups(pid);
    if (cg) {
      assert.equal(facts.partition, cg.partition);
      for (const ctrl of ['memory', 'cpu', 'cpuset', 'blkio', 'freezer', '']) {
        assert.ok(placed.get(ctrl)?.startsWith(`${cg.partition}/qemu-`), `${ctrl || 'unified'}: ${placed.get(ctrl)}`);
      }
      const mem = (f: string) => readFile(join('/sys/fs/cgroup/memory', cg.spacePath, f), 'utf8').then(Number);
      assert.equal(await mem('memory.limit_in_bytes'), 2048 * MiB, "the space's limit is above the VM");
      assert.ok((await mem('memory.usage_in_bytes')) > 16 * MiB, "QEMU's memory is charged to the space");
      t.diagnostic(`QEMU memory cgroup: ${placed.get('memory')}`);
    } else {
      t.diagnostic("no cgroup v1 driver here: the VM stays in libvirt's /machine");
      assert.ok(placed.get('memory')?.startsWith('/machine/'));
    }

    await assertOcsError(d().undefine(spaceId, vmId), 'conflict');

    // The guest watches its power button: stop must end it gracefully, well before the grace.
    const s0 = Date.now();
    await d().stop(spaceId, vmId, { graceSeconds: 60 });
    assert.ok(Date.now() - s0 < 55_000, 'the guest powered off by itself');
    assert.equal(await d().state(spaceId, vmId), 'shutoff');
    assert.match((await d().readConsole(spaceId, vmId, { tailBytes: 4096 })).text, /OCS-VM-ACPI-POWEROFF/);
    await waitFor('QEMU to exit', async () => !existsSync(`/proc/${pid}`), 10_000);

    await d().undefine(spaceId, vmId);
    await assertOcsError(d().state(spaceId, vmId), 'not_found');
    assert.equal((await d().listAllSpaces()).has(spaceId), false);
  },
);

test(
  'a guest that powers itself off ends shutoff; QEMU runs as the space uid; file owners stay',
  { skip, timeout: 180_000 },
  async (t) => {
    const spaceId = uniqueSpaceId();
    const vmId = 'vm_off';
    cleanupSpace(t, d, spaceId);
    const dir = await scratchDir(t);
    const guest = await buildTestGuest(dir, 'poweroff');
    const uid = 60_000 + randomInt(5_000);
    const disk = join(dir, 'data.qcow2');
    const img = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
    assert.equal(img.status, 0, String(img.stderr));
    await chown(disk, uid, uid);
    await chmod(disk, 0o600);
    await d().define(kernelSpec(spaceId, vmId, dir, guest, { diskPath: disk, runAsUid: uid, storageRoot: dir }));

    await d().start(spaceId, vmId);
    const pid = await qemuPid(spaceId, vmId);
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const qemuGid = (await stat('/var/lib/libvirt/qemu')).gid;
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    assert.match(status, new RegExp(`^Gid:\\s+${qemuGid}\\s`, 'm'));
    const xml = await d().dumpXml(spaceId, vmId);
    assert.match(xml, /<driver name='qemu' type='qcow2'\/>/);
    assert.match(xml, new RegExp(`<label>\\+${uid}:\\+${qemuGid}</label>`));
    assert.ok(
      !existsSync(join(suite.stagingDir() ?? '/nonexistent', `ocs-${spaceId}-${vmId}`)),
      'staged boot files are gone once QEMU runs',
    );

    await waitFor('the guest to power off', async () => (await d().state(spaceId, vmId)) === 'shutoff', 90_000, 250);
    assert.match((await d().readConsole(spaceId, vmId, { tailBytes: 4096 })).text, new RegExp(guest.bootMarker));
    assert.equal((await stat(guest.kernel)).uid, 0, 'the kernel in the space storage was never chowned');
    assert.equal((await stat(disk)).uid, uid, 'the disk keeps its owner');
    assert.equal(await d().state(spaceId, vmId), 'shutoff');
  },
);

test(
  'stop destroys a guest that ignores the power button once the grace period is over',
  { skip, timeout: 180_000 },
  async (t) => {
    const spaceId = uniqueSpaceId();
    const vmId = 'vm_hang';
    cleanupSpace(t, d, spaceId);
    const dir = await scratchDir(t);
    const guest = await buildTestGuest(dir, 'hang');
    await d().define(kernelSpec(spaceId, vmId, dir, guest));
    await d().start(spaceId, vmId);
    await d().start(spaceId, vmId); // already running: a no-op
    await waitForConsole(d(), spaceId, vmId, guest.readyMarker);

    const s0 = Date.now();
    await d().stop(spaceId, vmId, { graceSeconds: 3 });
    const took = Date.now() - s0;
    assert.ok(took >= 3000 && took < 20_000, `stop took ${took} ms`);
    assert.equal(await d().state(spaceId, vmId), 'shutoff');
    assert.doesNotMatch((await d().readConsole(spaceId, vmId, { tailBytes: 4096 })).text, /OCS-VM-ACPI-POWEROFF/);
    await d().stop(spaceId, vmId); // already off: a no-op
  },
);

test('a guest kernel panic shows as crashed', { skip, timeout: 180_000 }, async (t) => {
  const spaceId = uniqueSpaceId();
  const vmId = 'vm_panic';
  cleanupSpace(t, d, spaceId);
  const dir = await scratchDir(t);
  const guest = await buildTestGuest(dir, 'panic');
  await d().define(kernelSpec(spaceId, vmId, dir, guest));
  await d().start(spaceId, vmId);
  await waitFor('the crash', async () => (await d().state(spaceId, vmId)) === 'crashed', 90_000, 250);
  assert.match((await d().readConsole(spaceId, vmId, { tailBytes: 64 * 1024 })).text, /Kernel panic/);
  assert.equal(await d().state(spaceId, vmId), 'crashed');
});
