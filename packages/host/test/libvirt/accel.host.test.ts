/**
 * The accelerator choice. The decision logic runs against recorded boots; one test boots the
 * real guest kernel under TCG to the marker, and one runs the whole probe on this host's KVM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootToMarker, chooseAccelerator, newestBootKernel } from '#src/libvirt/accel.js';
import type { Accelerator } from '#src/libvirt/types.js';
import { requireHost } from '@ocs/host/testing/require-host';

const qemu = spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
const kernel = await newestBootKernel();
const skip = requireHost(
  'QEMU and a guest kernel',
  qemu.error || qemu.status !== 0
    ? 'qemu-system-x86_64 is not installed'
    : kernel === undefined
      ? 'no /boot/vmlinuz-* (apt-get install linux-image-amd64)'
      : false,
);

async function scratch(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'ocs-accel-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // A stand-in for /dev/kvm and a kernel file: the recorded boots never open them.
  await writeFile(join(dir, 'kvm'), '');
  await writeFile(join(dir, 'vmlinuz'), 'kernel');
  return { dir, device: join(dir, 'kvm'), kernel: join(dir, 'vmlinuz'), verdict: join(dir, 'verdict.json') };
}

/** A recorded boot: ms per accelerator, undefined = never reached the marker. */
function recorded(ms: Partial<Record<Accelerator, number>>) {
  const calls: { accel: Accelerator; timeoutMs: number }[] = [];
  const boot = async (_k: string, accel: Accelerator, timeoutMs: number) => {
    calls.push({ accel, timeoutMs });
    const v = ms[accel];
    return v !== undefined && v <= timeoutMs ? v : undefined;
  };
  return { boot, calls };
}

test('a KVM that hangs the guest kernel is not chosen, however fast a toy guest would be', async (t) => {
  const s = await scratch(t);
  const r = recorded({ tcg: 9000 });
  const c = await chooseAccelerator({ kvmDevice: s.device, kernel: s.kernel, boot: r.boot, qemu: '/bin/true' });
  assert.equal(c.accelerator, 'tcg');
  assert.match(c.reason, /did not boot under KVM within the 9000 ms it took under TCG/);
  assert.deepEqual(r.calls, [
    { accel: 'tcg', timeoutMs: 180_000 },
    { accel: 'kvm', timeoutMs: 9000 },
  ]);
});

test('KVM slower than TCG is not chosen; KVM faster than TCG is', async (t) => {
  const s = await scratch(t);
  const slow = await chooseAccelerator({
    kvmDevice: s.device,
    kernel: s.kernel,
    boot: recorded({ tcg: 5000, kvm: 6000 }).boot,
    qemu: '/bin/true',
  });
  assert.equal(slow.accelerator, 'tcg');
  const fast = await chooseAccelerator({
    kvmDevice: s.device,
    kernel: s.kernel,
    boot: recorded({ tcg: 5000, kvm: 800 }).boot,
    qemu: '/bin/true',
  });
  assert.equal(fast.accelerator, 'kvm');
  assert.match(fast.reason, /booted under KVM in 800 ms \(TCG: 5000 ms\)/);
});

test('the verdict is remembered, and probed again when the kernel changes', async (t) => {
  const s = await scratch(t);
  const first = recorded({ tcg: 5000, kvm: 700 });
  const o = { kvmDevice: s.device, kernel: s.kernel, verdictFile: s.verdict, qemu: '/bin/true' };
  assert.equal((await chooseAccelerator({ ...o, boot: first.boot })).accelerator, 'kvm');
  const again = recorded({ tcg: 5000 });
  const remembered = await chooseAccelerator({ ...o, boot: again.boot });
  assert.equal(remembered.accelerator, 'kvm');
  assert.match(remembered.reason, /\(probed \d{4}-/);
  assert.equal(again.calls.length, 0, 'no boot when the verdict is remembered');
  assert.equal(JSON.parse(await readFile(s.verdict, 'utf8')).accelerator, 'kvm');
  await utimes(s.kernel, new Date(), new Date(Date.now() + 5000));
  const changed = await chooseAccelerator({ ...o, boot: again.boot });
  assert.equal(changed.accelerator, 'tcg', 'a new kernel is probed again');
  assert.equal(again.calls.length, 2);
});

test('a failed TCG boot is not remembered; a missing device, kernel or forced choice never boots', async (t) => {
  const s = await scratch(t);
  const none = recorded({});
  const o = { kvmDevice: s.device, kernel: s.kernel, verdictFile: s.verdict, qemu: '/bin/true', boot: none.boot };
  assert.match((await chooseAccelerator(o)).reason, /did not boot under TCG either/);
  assert.equal(existsSync(s.verdict), false);
  const calls = none.calls.length;
  assert.equal((await chooseAccelerator({ ...o, kvmDevice: join(s.dir, 'nokvm') })).accelerator, 'tcg');
  assert.match((await chooseAccelerator({ ...o, kernel: join(s.dir, 'nokernel') })).reason, /cannot be read/);
  assert.equal((await chooseAccelerator({ ...o, setting: 'tcg' })).accelerator, 'tcg');
  assert.equal((await chooseAccelerator({ ...o, setting: 'kvm' })).accelerator, 'kvm');
  await assert.rejects(chooseAccelerator({ ...o, setting: 'kvm', kvmDevice: join(s.dir, 'nokvm') }), /forced to kvm/);
  assert.equal(none.calls.length, calls);
});

test('the guest kernel boots to the marker under TCG', { skip, timeout: 200_000 }, async (t) => {
  const ms = await bootToMarker(kernel!, 'tcg', 180_000);
  assert.ok(ms !== undefined, 'the kernel reached "VFS: Unable to mount root fs"');
  t.diagnostic(`TCG boot to marker: ${ms} ms`);
  const cut = await bootToMarker(kernel!, 'tcg', 50);
  assert.equal(cut, undefined, 'a boot cut short never counts');
});

test('on this host, KVM is chosen only if the guest kernel boots under it', { skip, timeout: 400_000 }, async (t) => {
  const { accelerator, reason } = await chooseAccelerator();
  t.diagnostic(`accelerator ${accelerator}: ${reason}`);
  if (accelerator === 'kvm') {
    assert.match(reason, /booted under KVM in \d+ ms/);
    assert.ok((await bootToMarker(kernel!, 'kvm', 120_000)) !== undefined, 'and it boots again');
  } else assert.match(reason, /KVM|kvm/);
});
