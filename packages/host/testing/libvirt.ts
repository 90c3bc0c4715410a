/**
 * Shared helpers of the libvirt tests: whether a real libvirtd can be used here, per-test
 * scratch directories and ids, and polling. Every test names its own space id and removes
 * exactly what it made.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { isOcsError, type ErrorCode } from '@ocs/protocol';
import { testGuestUnavailable } from './test-guest.js';
import { requireHost } from './require-host.js';
import type { VmDriver, VmSpec } from '#src/libvirt/types.js';
import { createVmDriver, type LibvirtVmDriver } from '#src/libvirt/driver.js';

export const MiB = 1024 * 1024;

/** Why the tests that need libvirtd are skipped here, or false; under OCS_REQUIRE_HOST=1 a reason throws instead. */
export async function libvirtSkipReason(): Promise<string | false> {
  return requireHost('libvirtd and a test guest', await libvirtUnavailable());
}

async function libvirtUnavailable(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (libvirt qemu:///system, cgroups)';
  const v = spawnSync('virsh', ['-c', 'qemu:///system', 'version'], { stdio: 'ignore', timeout: 15_000 });
  if (v.error || v.status !== 0) return 'libvirtd is not reachable at qemu:///system (run scripts/start-services.sh)';
  return (await testGuestUnavailable()) ?? false;
}

/**
 * The driver of a suite, made in its `before` and closed in its `after` (none when `skip`):
 * TCG, always (a suite of the driver tests the driver, not the accelerator probe:
 * accel.host.test.ts does), its staging directory and the definitions (as the broker keeps
 * them in a space's storage: here, one scratch tree per run) in scratch directories removed in
 * `after`. `driver()` fails a test that runs without it.
 */
export function suiteVmDriver(skip: string | false): {
  driver: () => LibvirtVmDriver;
  stagingDir: () => string | undefined;
} {
  let driver: LibvirtVmDriver | undefined;
  let stagingDir: string | undefined;
  let definitionsDir: string | undefined;
  before(async () => {
    if (skip) return;
    stagingDir = await mkdtemp('/tmp/ocs-libvirt-stage-');
    const defs = await mkdtemp('/tmp/ocs-libvirt-defs-');
    definitionsDir = defs;
    driver = await createVmDriver({ stagingDir, accelerator: 'tcg', vmsDir: async (spaceId) => join(defs, spaceId) });
  });
  after(async () => {
    await driver?.close();
    if (stagingDir) await rm(stagingDir, { recursive: true, force: true });
    if (definitionsDir) await rm(definitionsDir, { recursive: true, force: true });
  });
  return {
    driver: () => {
      assert.ok(driver, 'driver created in before()');
      return driver;
    },
    stagingDir: () => stagingDir,
  };
}

/** A fresh space id of our own, e.g. `sp_t3f9a0c1b2d`. */
export function uniqueSpaceId(): string {
  return `sp_t${randomBytes(5).toString('hex')}`;
}

/** A scratch directory (mode 0755: QEMU's user must reach files in it), removed when the test ends. */
export async function scratchDir(t: TestContext, tag = 'vm'): Promise<string> {
  const dir = await mkdtemp(join('/tmp', `ocs-libvirt-${tag}-`));
  await chmod(dir, 0o755);
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Removes every VM of `spaceId` when the test ends (also after a failure). */
export function cleanupSpace(t: TestContext, driver: () => VmDriver, spaceId: string): void {
  t.after(() => driver().removeAllForSpace(spaceId));
}

/** A spec for a kernel-booted VM with its files in `dir`. */
export function kernelSpec(
  spaceId: string,
  vmId: string,
  dir: string,
  guest: { kernel: string; initrd: string; cmdline: string },
  extra: Partial<VmSpec> = {},
): VmSpec {
  return {
    spaceId,
    vmId,
    name: 'test-vm',
    vcpus: 1,
    memoryBytes: 256 * MiB,
    boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    consoleLogPath: join(dir, `${vmId}.console.log`),
    ...extra,
  };
}

/** Polls `fn` until it returns something truthy; fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Waits until the VM's console log contains `marker`; resolves with the log. */
export function waitForConsole(
  driver: VmDriver,
  spaceId: string,
  vmId: string,
  marker: string,
  timeoutMs = 90_000,
): Promise<string> {
  return waitFor(
    `"${marker}" on the console of ${vmId}`,
    async () => {
      const { text } = await driver.readConsole(spaceId, vmId, { tailBytes: 64 * 1024 });
      return text.includes(marker) ? text : undefined;
    },
    timeoutMs,
  );
}

/** The pid of the VM's QEMU, from libvirt's pid file. */
export async function qemuPid(spaceId: string, vmId: string): Promise<number> {
  const pid = Number((await readFile(`/run/libvirt/qemu/ocs-${spaceId}-${vmId}.pid`, 'utf8')).trim());
  assert.ok(Number.isSafeInteger(pid) && pid > 1, 'QEMU pid file');
  return pid;
}

/** /proc/<pid>/cgroup as controller list → path (`""` for the cgroup2 line). */
export async function procCgroups(pid: number): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const line of (await readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (controllers !== undefined && path !== undefined) for (const c of controllers.split(',')) out.set(c, path);
  }
  return out;
}

/** Asserts that `promise` rejects with an OcsError of `code`. */
export async function assertOcsError(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isOcsError(err), `expected an OcsError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}
