/** The accelerator probe: it must really run under TCG, and KVM is chosen only when it also runs there, fast. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectAccelerator, probeImage, runProbe } from './accel.js';

const qemu = spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
const skip = qemu.error || qemu.status !== 0 ? 'qemu-system-x86_64 is not installed' : false;

test('the probe image is a multiboot image with its page tables zeroed', () => {
  const img = probeImage();
  assert.equal(img.length, 0x4000);
  assert.equal(img.readUInt32LE(0), 0x1badb002);
  assert.equal((img.readUInt32LE(0) + img.readUInt32LE(4) + img.readUInt32LE(8)) >>> 0, 0, 'header checksum');
  assert.ok(img.subarray(0x1000).every((b) => b === 0));
});

test('the probe reaches 64-bit mode and exits through the debug port under TCG', { skip }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ocs-probe-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'probe.bin'), probeImage());
  const ms = await runProbe(join(dir, 'probe.bin'), 'tcg', 20_000);
  assert.ok(ms !== undefined, 'exit code 67');
  t.diagnostic(`TCG probe: ${ms} ms`);
});

test('detectAccelerator gives an answer and a reason', { skip }, async (t) => {
  const { accelerator, reason } = await detectAccelerator();
  t.diagnostic(`accelerator ${accelerator}: ${reason}`);
  assert.ok(accelerator === 'tcg' || accelerator === 'kvm');
  if (accelerator === 'kvm') assert.match(reason, /ran under KVM/);
  assert.ok(reason.length > 0);
});
