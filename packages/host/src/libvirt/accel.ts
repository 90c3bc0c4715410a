/**
 * Chooses QEMU's accelerator. KVM is used only when it demonstrably runs guest code, and does
 * so quickly: on some hosts /dev/kvm exists but is a nested "PVM" KVM on which a stock guest
 * kernel hangs (and `type='kvm'` domains start but never boot), so the device's presence
 * proves nothing.
 *
 * The probe is a 150-byte multiboot image (below) that QEMU's -kernel loads: from 32-bit
 * protected mode it builds identity page tables, enables PAE, long mode and paging, jumps to
 * 64-bit code and writes 0x21 to an isa-debug-exit port, so QEMU exits with (0x21 << 1) | 1 =
 * 67. It runs once under TCG (the baseline) and once under KVM; KVM wins only if it exits with
 * 67 within max(1.5 s, 3 × the TCG time). Measured here: TCG 0.2 s; KVM 3.7 s (each guest
 * exit costs tens of milliseconds on the nested host), so TCG is chosen, which matches a
 * real kernel never getting past "Probing EDD" under KVM on this machine.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Accelerator } from './types.js';

/**
 * Assembled (GNU as, linked at 0x100000) from:
 * ```
 *   .code32                      # multiboot header, "a.out kludge" (flags bit 16): load the file flat at 1 MiB
 *   .long 0x1BADB002, 0x00010000, -(0x1BADB002+0x00010000), 0x100000, 0x100000, 0, 0, start
 * start: cli
 *   movl $(pdpt+3), pml4; movl $(pd+3), pdpt; movl $0x83, pd    # 2 MiB identity page
 *   movl $pml4, %eax; movl %eax, %cr3
 *   movl %cr4, %eax; orl $0x20, %eax; movl %eax, %cr4            # PAE
 *   movl $0xC0000080, %ecx; rdmsr; orl $0x100, %eax; wrmsr       # EFER.LME
 *   movl %cr0, %eax; orl $0x80000001, %eax; movl %eax, %cr0      # PG | PE
 *   lgdt gdtr; ljmp $0x08, $long64
 *   .code64
 * long64: movb $0x21, %al; outb %al, $0xf4; 1: hlt; jmp 1b
 * gdt: .quad 0, 0x00209A0000000000; gdtr: .word 15; .long gdt
 *   .align 4096 → pml4, pdpt, pd: three zeroed pages at 0x101000..0x103fff
 * ```
 */
const PROBE_CODE =
  '02b0ad1b00000100fe4f51e40000100000001000000000000000000020001000fac7050010100003201000c70500201000' +
  '03301000c7050030100083000000b8001010000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f20c00d' +
  '010000800f22c00f011590001000ea770010000800b021e6f4f4ebfd6690000000000000000000000000009a20000f0080001000';
const PROBE_SIZE = 0x4000;
const PROBE_EXIT = 67;

/** The probe image: code, then zeroed page tables. */
export function probeImage(): Buffer {
  const img = Buffer.alloc(PROBE_SIZE);
  Buffer.from(PROBE_CODE, 'hex').copy(img);
  return img;
}

/** Runs the probe under `accel`; resolves with the elapsed ms, or undefined if it failed or timed out. */
export function runProbe(
  image: string,
  accel: 'kvm' | 'tcg',
  timeoutMs: number,
  qemu = 'qemu-system-x86_64',
): Promise<number | undefined> {
  const args = [
    '-accel',
    accel,
    '-M',
    'pc',
    '-m',
    '16',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=0x04',
    '-kernel',
    image,
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(qemu, args, { stdio: 'ignore', timeout: timeoutMs, killSignal: 'SIGKILL' });
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => resolve(code === PROBE_EXIT ? Date.now() - started : undefined));
  });
}

/** The accelerator to use, and why (for the daemon's log). */
export async function detectAccelerator(
  qemu = 'qemu-system-x86_64',
): Promise<{ accelerator: Accelerator; reason: string }> {
  if (process.arch !== 'x64')
    return { accelerator: 'tcg', reason: `host is ${process.arch}, only x86_64 guests are built` };
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accelerator: 'tcg', reason: 'no usable /dev/kvm' };
  }
  const dir = await mkdtemp(join(tmpdir(), 'ocs-kvm-probe-'));
  try {
    const image = join(dir, 'probe.bin');
    await writeFile(image, probeImage(), { mode: 0o600 });
    const tcgMs = await runProbe(image, 'tcg', 20_000, qemu);
    if (tcgMs === undefined)
      return { accelerator: 'tcg', reason: 'the probe guest did not run under TCG either (QEMU broken?)' };
    const limit = Math.max(1500, 3 * tcgMs);
    const kvmMs = await runProbe(image, 'kvm', limit, qemu);
    if (kvmMs === undefined) {
      return {
        accelerator: 'tcg',
        reason: `/dev/kvm exists but the probe guest did not finish under KVM within ${limit} ms (TCG: ${tcgMs} ms)`,
      };
    }
    return { accelerator: 'kvm', reason: `probe guest ran under KVM in ${kvmMs} ms (TCG: ${tcgMs} ms)` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
