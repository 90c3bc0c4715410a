/** Helpers for the cgroup tests (real kernel, root). Not exported from the package. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import type { CgroupDriver, CgroupLimits } from '#src/cgroups/types.js';

/** A fresh top-level group name, so a test can only ever destroy what it made. */
export function uniquePrefix(): string {
  return `ocs-test-${randomBytes(5).toString('hex')}`;
}

export interface Held {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  /** Lets the shell exec the real command (after the test moved it into a group). */
  release(): void;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/**
 * Starts `cmd` behind a shell that waits for one line on stdin before exec'ing it, so the pid
 * can be placed in a cgroup before the command runs (the daemon's own pattern).
 */
export function spawnHeld(cmd: string, args: string[] = []): Held {
  const child = spawn('/bin/sh', ['-c', 'read -r _ && exec "$@"', 'held', cmd, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  if (child.pid === undefined) throw new Error(`spawn ${cmd} failed`);
  return { child, pid: child.pid, release: () => child.stdin.end('go\n'), exit, output: () => out };
}

/** A process placed in `path` and running `sh -c script`. */
export async function runIn(driver: CgroupDriver, path: string, script: string): Promise<Held> {
  const held = spawnHeld('/bin/sh', ['-c', script]);
  try {
    await driver.addProcess(path, held.pid);
  } catch (err) {
    held.child.kill('SIGKILL');
    throw err;
  }
  held.release();
  return held;
}

/** A private top-level group of `driver`, destroyed (and only it) when the test ends. */
export function scopedGroup(t: TestContext, driver: () => CgroupDriver): string {
  const prefix = uniquePrefix();
  t.after(() => driver().destroy(prefix));
  return prefix;
}

/** `sleep 600`, placed in `path` before it runs; killed when the test ends. */
export async function sleeperIn(t: TestContext, driver: CgroupDriver, path: string): Promise<Held> {
  const held = spawnHeld('sleep', ['600']);
  t.after(() => held.child.kill('SIGKILL'));
  await driver.addProcess(path, held.pid);
  held.release();
  return held;
}

/**
 * A space's subtree under `p` as the daemon makes one, `sp/api`, `sp/workloads/c1` and
 * `sp/workloads/c2` (with `limits`), and a sibling `p/other`: a process in each (three in c1,
 * once its forks ran), every one killed when the test ends.
 */
export async function busySubtree(
  t: TestContext,
  driver: CgroupDriver,
  p: string,
  limits?: CgroupLimits,
): Promise<{ sp: string; inside: Held[]; survivor: Held }> {
  const sp = `${p}/sp`;
  for (const g of [`${sp}/api`, `${sp}/workloads/c1`, `${sp}/workloads/c2`, `${p}/other`])
    await driver.create(g, limits);
  const inside = [
    await runIn(driver, `${sp}/api`, 'exec sleep 600'),
    await runIn(driver, `${sp}/workloads/c1`, 'sleep 600 & sleep 600 & wait'),
    await runIn(driver, `${sp}/workloads/c2`, 'exec sleep 600'),
  ];
  const survivor = await runIn(driver, `${p}/other`, 'exec sleep 600');
  t.after(() => [...inside, survivor].forEach((h) => h.child.kill('SIGKILL')));
  return { sp, inside, survivor };
}

/**
 * After `destroy(sp)` of a {@link busySubtree}: the sibling still runs and is all that is left
 * under `p`, and destroying `sp` again, or a group never made, is a no-op.
 */
export async function assertOnlySiblingLeft(
  driver: CgroupDriver,
  p: string,
  sp: string,
  survivor: Held,
): Promise<void> {
  assert.ok(alive(survivor.pid) && !gone(survivor.pid), 'a sibling group is untouched');
  assert.deepEqual(await driver.children(p), ['other']);
  await driver.destroy(sp);
  await driver.destroy(`${p}/never-made`);
}

/**
 * Polls `cond` every 10 ms until it holds; throws once `ms` have passed. The loop ends either way:
 * a poll left running after a timeout would keep the test's process alive, and the runner with it.
 */
export async function waitUntil(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>(
    (_r, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  );
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The path of `pid`'s group in a v1 controller ("memory") or in v2 (""), from /proc. */
export function procCgroup(pid: number, controller: string): string | undefined {
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (ctrls !== undefined && ctrls.split(',').includes(controller) && (controller !== '' || ctrls === ''))
      return path;
  }
  return undefined;
}

/** Paths a hostile or careless space id could produce; every one must be refused. */
export const HOSTILE_PATHS = [
  '',
  '/',
  '/etc',
  '..',
  '../x',
  'x/..',
  'a/../../b',
  '.',
  './a',
  'a/./b',
  'a//b',
  'a/',
  '/a',
  '.hidden',
  '-rf',
  'a b',
  'a\nb',
  'a\0b',
  'ü',
  'a;b',
  'a\\b',
  '~',
  'x'.repeat(65),
  Array.from({ length: 17 }, () => 'a').join('/'),
];

export const GOOD_LIMITS: CgroupLimits = { cpuMillicores: 500, memoryBytes: 64 * 1024 * 1024, pids: 64 };

/** Limits that must be refused (non-integers, out of bounds, wrong types). */
export const BAD_LIMITS: unknown[] = [
  { ...GOOD_LIMITS, cpuMillicores: 0 },
  { ...GOOD_LIMITS, cpuMillicores: 5 },
  { ...GOOD_LIMITS, cpuMillicores: -500 },
  { ...GOOD_LIMITS, cpuMillicores: 1.5e3 + 0.5 },
  { ...GOOD_LIMITS, cpuMillicores: Number.NaN },
  { ...GOOD_LIMITS, cpuMillicores: '500' },
  { ...GOOD_LIMITS, memoryBytes: 1000 },
  { ...GOOD_LIMITS, memoryBytes: Number.POSITIVE_INFINITY },
  { ...GOOD_LIMITS, memoryBytes: 2 ** 60 },
  { ...GOOD_LIMITS, pids: 0 },
  { ...GOOD_LIMITS, pids: 2 ** 31 },
  { cpuMillicores: 500 },
  null,
];

/** Asserts an OcsError with code invalid_request. */
export async function assertInvalid(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(
    p,
    (e: { code?: string; name?: string }) => e.name === 'OcsError' && e.code === 'invalid_request',
    what,
  );
}

/** Every refused path, on every method that takes one; returns nothing but assertion failures. */
export async function assertHostilePathsRefused(driver: CgroupDriver): Promise<void> {
  for (const p of HOSTILE_PATHS) {
    const what = JSON.stringify(p);
    await assertInvalid(driver.create(p, GOOD_LIMITS), `create ${what}`);
    await assertInvalid(driver.setLimits(p, GOOD_LIMITS), `setLimits ${what}`);
    await assertInvalid(driver.readLimits(p), `readLimits ${what}`);
    await assertInvalid(driver.usage(p), `usage ${what}`);
    await assertInvalid(driver.addProcess(p, process.pid), `addProcess ${what}`);
    await assertInvalid(driver.processes(p), `processes ${what}`);
    await assertInvalid(driver.exists(p), `exists ${what}`);
    await assertInvalid(driver.children(p), `children ${what}`);
    await assertInvalid(driver.destroy(p), `destroy ${what}`);
    assert.throws(
      () => driver.absolutePath(p),
      (e: { code?: string }) => e.code === 'invalid_request',
      `absolutePath ${what}`,
    );
  }
}

/** Gone, or a zombie nobody has reaped yet: either way it no longer runs. */
export function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Node code that allocates and touches `mib` MiB in 8 MiB Buffers, then says it survived. */
export function hogCode(mib: number): string {
  return `const a = []; for (let i = 0; i < ${Math.ceil(mib / 8)}; i++) a.push(Buffer.alloc(8 << 20, 1)); console.log('survived', a.length * 8, 'MiB');`;
}

/** Node code that spins on the CPU for `ms` wall-clock milliseconds. */
export function spinCode(ms: number): string {
  return `const end = Date.now() + ${ms}; let x = 0; while (Date.now() < end) x++; console.log('spun', x > 0);`;
}

/** Pids listed in a cgroup.procs file. */
export function procsOf(file: string): number[] {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
}

export const MiB = 1024 * 1024;
