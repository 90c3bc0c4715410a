/**
 * bench/storage: sequential write and read throughput inside a space's encrypted storage against
 * the same loop-mounted ext4 unencrypted (a directory beside the encrypted one, on the same
 * image), in one run, alternating; and which kernel implementation serves the cipher. With the
 * generic AES (no AES-NI, as on our machines) expect a ratio far below 1; with hardware AES, near 1.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { cipherImplementation, createStorageDriver } from '@ocs/host';
import { percentile, report } from './measure.js';

const MiB = 1024 ** 2;
const SIZE_MIB = Number(process.env.BENCH_STORAGE_MIB ?? 512);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

function timedDd(args: string[], bytes: number): number {
  const t0 = process.hrtime.bigint();
  execFileSync('dd', args, { stdio: 'ignore' });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return bytes / 1e6 / s;
}

function dropCaches(): void {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

const root = mkdtempSync('/var/lib/ocs-bench-storage-');
const storage = await createStorageDriver({ backend: 'fscrypt', root });
const id = `sp_benchstorage${randomBytes(3).toString('hex')}`;
try {
  const key = randomBytes(32);
  const info = await storage.create(id, SIZE_MIB * 2 * MiB + 256 * MiB, key);
  key.fill(0);
  const encrypted = info.mountpoint;
  // The image's own root, beside the encrypted directory: same device, same ext4, no policy.
  const plain = join(dirname(encrypted), 'bench-plain');
  mkdirSync(plain);
  const bytes = SIZE_MIB * MiB;
  const w = { enc: [] as number[], plain: [] as number[] };
  const r = { enc: [] as number[], plain: [] as number[] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const [side, dir] of [
      ['enc', encrypted],
      ['plain', plain],
    ] as const) {
      const file = join(dir, 'f');
      dropCaches();
      w[side].push(timedDd(['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${SIZE_MIB}`, 'conv=fdatasync'], bytes));
      dropCaches();
      r[side].push(timedDd([`if=${file}`, 'of=/dev/null', 'bs=1M'], bytes));
      rmSync(file);
    }
  }
  const cipher = cipherImplementation();
  report('storage', {
    'MiB per run': SIZE_MIB,
    rounds: ROUNDS,
    'cipher driver': cipher.driver,
    'cipher accelerated': cipher.accelerated,
    'write encrypted p50 MB/s': percentile(w.enc, 50),
    'write plain (same device) p50 MB/s': percentile(w.plain, 50),
    'ratio write encrypted / plain': percentile(w.enc, 50) / percentile(w.plain, 50),
    'read encrypted p50 MB/s': percentile(r.enc, 50),
    'read plain (same device) p50 MB/s': percentile(r.plain, 50),
    'ratio read encrypted / plain': percentile(r.enc, 50) / percentile(r.plain, 50),
  });
  rmSync(plain, { recursive: true, force: true });
} finally {
  await storage.destroy(id).catch(() => undefined);
  await storage.close().catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
}
