/**
 * Chooses QEMU's accelerator. KVM is used only when the guest kernel the node boots really
 * boots under it, and faster than under TCG: on some hosts /dev/kvm exists but is a nested
 * "PVM" KVM on which a stock guest kernel hangs while tiny test programs run fine, so neither
 * the device's presence nor a toy guest proves anything (a 150-byte long-mode probe finished
 * under KVM in 1.3 s on one such machine, and every real guest then hung).
 *
 * The probe boots the guest kernel itself (Debian's `linux-image-amd64` by default) with no
 * root device and `panic=-1`, so its last word is the kernel's own "Unable to mount root fs"
 * panic: a marker printed only after every initcall ran. It boots once under TCG (the
 * baseline, also the proof that QEMU works) and then under KVM, which must reach the same
 * marker before the TCG time is up. Measured here (nested KVM): TCG 10.7 s, KVM never.
 *
 * The verdict is remembered in a file keyed by what it depends on (kernel, QEMU binary, host
 * kernel, the KVM device), so a daemon restart does not pay for the probe again.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { access, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import type { Accelerator } from './types.js';

/** What the operator configured: `auto` probes; `tcg` and `kvm` force. */
export type AcceleratorSetting = 'auto' | 'tcg' | 'kvm';

/** The accelerator and why it was chosen (the daemon logs it). */
export interface AcceleratorChoice {
  accelerator: Accelerator;
  reason: string;
}

/** Printed by every Linux kernel that got to the end of its boot without a root device. */
export const PROBE_MARKER = 'VFS: Unable to mount root fs';

export interface ProbeOptions {
  setting?: AcceleratorSetting;
  /** The kernel the probe boots; default the newest /boot/vmlinuz-*. */
  kernel?: string;
  /** Where the verdict is remembered (0600); none: probe every time. */
  verdictFile?: string;
  qemu?: string;
  /** The KVM device (tests point it elsewhere). */
  kvmDevice?: string;
  /** Longest TCG boot waited for; default 180 s (a cold first boot on a busy 2-core machine). */
  tcgTimeoutMs?: number;
  /** Boots `kernel` under `accel`; resolves with the ms to the marker, or undefined. Tests replace it. */
  boot?: (kernel: string, accel: Accelerator, timeoutMs: number) => Promise<number | undefined>;
}

/** Boots `kernel` under `accel` to {@link PROBE_MARKER}; the elapsed ms, or undefined on timeout or failure. */
export function bootToMarker(
  kernel: string,
  accel: Accelerator,
  timeoutMs: number,
  qemu = 'qemu-system-x86_64',
): Promise<number | undefined> {
  const args = [
    ...['-accel', accel, '-M', 'pc', '-m', '256', '-smp', '1'],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-serial', 'stdio'],
    ...['-kernel', kernel, '-append', 'console=ttyS0 quiet panic=-1'],
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let seen = '';
    let done = false;
    const finish = (ms: number | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(ms);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (chunk: string) => {
      // Keep only a tail: the marker may straddle two chunks, the log need not be kept.
      seen = (seen + chunk).slice(-4096);
      if (seen.includes(PROBE_MARKER)) finish(Date.now() - started);
    });
    child.on('error', () => finish(undefined));
    child.on('close', () => finish(undefined));
  });
}

/** The newest /boot/vmlinuz-*, or undefined. */
export async function newestBootKernel(): Promise<string | undefined> {
  const names = await readdir('/boot').catch(() => [] as string[]);
  const kernels = names.filter((n) => n.startsWith('vmlinuz-')).sort();
  return kernels.length > 0 ? join('/boot', kernels[kernels.length - 1]!) : undefined;
}

async function fileKey(path: string): Promise<string> {
  const s = await stat(path);
  return `${path}:${s.size}:${s.mtimeMs}:${s.rdev}`;
}

async function which(cmd: string): Promise<string | undefined> {
  if (cmd.includes('/')) return cmd;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(dir, cmd);
    if (
      await access(p, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return p;
  }
  return undefined;
}

interface Remembered extends AcceleratorChoice {
  key: string;
  at: string;
}

/** The accelerator to use and why; throws only when `kvm` is forced and cannot be used. */
export async function chooseAccelerator(o: ProbeOptions = {}): Promise<AcceleratorChoice> {
  const setting = o.setting ?? 'auto';
  const device = o.kvmDevice ?? '/dev/kvm';
  if (setting === 'tcg') return { accelerator: 'tcg', reason: 'forced by configuration (accelerator: tcg)' };
  const kvmUsable = await access(device, constants.R_OK | constants.W_OK).then(
    () => true,
    () => false,
  );
  if (setting === 'kvm') {
    if (!kvmUsable) throw new Error(`accelerator is forced to kvm, but ${device} cannot be opened read-write`);
    return { accelerator: 'kvm', reason: 'forced by configuration (accelerator: kvm)' };
  }
  if (process.arch !== 'x64')
    return { accelerator: 'tcg', reason: `host is ${process.arch}; only x86_64 KVM is probed` };
  if (!kvmUsable) return { accelerator: 'tcg', reason: `no usable ${device}` };
  const kernel = o.kernel ?? (await newestBootKernel());
  if (kernel === undefined)
    return { accelerator: 'tcg', reason: 'no guest kernel to probe KVM with (apt-get install linux-image-amd64)' };
  const qemu = o.qemu ?? 'qemu-system-x86_64';
  const qemuPath = await which(qemu);
  if (qemuPath === undefined) return { accelerator: 'tcg', reason: `${qemu} not found` };

  let key: string;
  try {
    const parts = [await fileKey(kernel), await fileKey(qemuPath), await fileKey(device), release()];
    key = createHash('sha256').update(parts.join('\n')).digest('hex');
  } catch {
    return { accelerator: 'tcg', reason: `the probe kernel ${kernel} cannot be read` };
  }
  if (o.verdictFile !== undefined) {
    const old = await readRemembered(o.verdictFile);
    if (old?.key === key) return { accelerator: old.accelerator, reason: `${old.reason} (probed ${old.at})` };
  }
  const boot = o.boot ?? ((k, a, t) => bootToMarker(k, a, t, qemu));
  const verdict = await probe(kernel, boot, o.tcgTimeoutMs ?? 180_000);
  if (o.verdictFile !== undefined && verdict.remember) {
    const data: Remembered = {
      accelerator: verdict.accelerator,
      reason: verdict.reason,
      key,
      at: new Date().toISOString(),
    };
    // Best effort: a verdict that cannot be kept is probed again next start, nothing worse.
    const tmp = `${o.verdictFile}.tmp`;
    await writeFile(tmp, JSON.stringify(data), { mode: 0o600 })
      .then(() => rename(tmp, o.verdictFile!))
      .catch(() => undefined);
  }
  return { accelerator: verdict.accelerator, reason: verdict.reason };
}

async function probe(
  kernel: string,
  boot: NonNullable<ProbeOptions['boot']>,
  tcgTimeoutMs: number,
): Promise<AcceleratorChoice & { remember: boolean }> {
  const tcgMs = await boot(kernel, 'tcg', tcgTimeoutMs);
  if (tcgMs === undefined) {
    // Not remembered: a broken QEMU or an overloaded machine may be better next time.
    return {
      accelerator: 'tcg',
      reason: `the probe kernel ${kernel} did not boot under TCG either within ${tcgTimeoutMs} ms`,
      remember: false,
    };
  }
  const kvmMs = await boot(kernel, 'kvm', tcgMs);
  if (kvmMs === undefined) {
    return {
      accelerator: 'tcg',
      reason: `/dev/kvm exists, but ${kernel} did not boot under KVM within the ${tcgMs} ms it took under TCG`,
      remember: true,
    };
  }
  return {
    accelerator: 'kvm',
    reason: `${kernel} booted under KVM in ${kvmMs} ms (TCG: ${tcgMs} ms)`,
    remember: true,
  };
}

async function readRemembered(path: string): Promise<Remembered | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<Remembered>;
    if (
      (v.accelerator === 'kvm' || v.accelerator === 'tcg') &&
      typeof v.reason === 'string' &&
      typeof v.key === 'string' &&
      typeof v.at === 'string'
    )
      return v as Remembered;
  } catch {
    // missing or unreadable: probe again
  }
  return undefined;
}
