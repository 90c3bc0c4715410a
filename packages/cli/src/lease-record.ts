/**
 * Where an orchestrator records its leases: one JSON file (0600) the caller names, holding each
 * lease with its wrapped key. `place`, `keep` and `release` may run at once: every change is
 * read-modify-write under an exclusive lock file, written whole and renamed into place.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Lease } from '@ocs/client';
import { UsageError } from './units.js';

const STALE_LOCK_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LeaseRecord {
  constructor(readonly path: string) {}

  read(): Lease[] {
    try {
      const v = JSON.parse(readFileSync(this.path, 'utf8')) as { leases?: Lease[] };
      return Array.isArray(v.leases) ? v.leases : [];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new UsageError(`${this.path} is not a lease record: ${(err as Error).message}`);
    }
  }

  /** Applies `change` to the leases under the lock; returns what it returns. */
  async update<T>(change: (leases: Lease[]) => T): Promise<T> {
    const lock = `${this.path}.lock`;
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    for (let waited = 0; ; waited += 20) {
      try {
        closeSync(openSync(lock, 'wx', 0o600));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // A holder that died leaves its lock: older than any update takes, it is taken over.
        const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
        if (age > STALE_LOCK_MS) rmSync(lock, { force: true });
        else if (waited > 10_000) throw new UsageError(`${lock} is held by another ocs: try again`);
        await sleep(20);
      }
    }
    try {
      const leases = this.read();
      const result = change(leases);
      const tmp = `${this.path}.tmp-${process.pid}`;
      writeFileSync(tmp, `${JSON.stringify({ leases }, null, 2)}\n`, { mode: 0o600 });
      renameSync(tmp, this.path);
      return result;
    } finally {
      rmSync(lock, { force: true });
    }
  }
}
