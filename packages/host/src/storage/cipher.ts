/**
 * Which kernel implementation encrypts space data. fscrypt's contents mode is AES-256-XTS (ZFS's
 * aes-256-gcm uses the same AES core): with AES-NI (or the ARMv8 crypto extensions) that costs
 * little; with the generic table-free implementation the kernel falls back to, encrypted I/O is a
 * fraction of plain I/O (measured by bench/storage). Read from /proc/crypto; the `xts(aes)`
 * instance appears there once it was first used, the AES cores are there from boot.
 */
import { readFileSync } from 'node:fs';

export interface CipherImplementation {
  /** The kernel's name of the mode, e.g. `xts(aes)`. */
  algorithm: string;
  /** The driver serving it (highest priority), e.g. `xts-aes-aesni` or `xts(ecb(aes-fixed-time))`. */
  driver: string;
  /** A hardware-accelerated AES core serves it. */
  accelerated: boolean;
}

interface Entry {
  name: string;
  driver: string;
  priority: number;
}

const HARDWARE = /aesni|aes-ce|vaes|aes-arm64-ce|aes-s390|aes-ppc|p8_aes/;

export function parseProcCrypto(text: string): Entry[] {
  const out: Entry[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.+)$`, 'm').exec(block)?.[1]?.trim();
    const name = field('name');
    const driver = field('driver');
    if (name && driver) out.push({ name, driver, priority: Number(field('priority') ?? 0) });
  }
  return out;
}

/** The implementation of `xts(aes)` (or, before its first use, of the AES core it will use). */
export function cipherImplementation(procCrypto?: string): CipherImplementation {
  let text = procCrypto;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/crypto', 'utf8');
    } catch {
      return { algorithm: 'xts(aes)', driver: 'unknown', accelerated: false };
    }
  }
  const entries = parseProcCrypto(text);
  const best = (name: string) => entries.filter((e) => e.name === name).sort((a, b) => b.priority - a.priority)[0];
  const xts = best('xts(aes)');
  if (xts) return { algorithm: 'xts(aes)', driver: xts.driver, accelerated: HARDWARE.test(xts.driver) };
  const core = best('aes');
  return {
    algorithm: 'xts(aes)',
    driver: core ? `xts over ${core.driver}` : 'unknown',
    accelerated: core !== undefined && HARDWARE.test(core.driver),
  };
}
