/** For tests only: a daemon database holding two active spaces, as the ledger records them. */
import { openDatabase, type Database } from '#src/state/db.js';
import { Ledger } from '#src/state/ledger.js';
import { SpacesRepo } from '#src/state/spaces-repo.js';

const MiB = 1024 * 1024;
export const SPACE_A = 'sp_aaaaaaaaaaaaaaaaaaaa';
export const SPACE_B = 'sp_bbbbbbbbbbbbbbbbbbbb';

/** Opens `path` (default in memory) and reserves spaces A and B (1 CPU, 256 MiB, 64 MiB, 256 pids) unless present. */
export function twoSpaces(path = ':memory:'): { db: Database; spaces: SpacesRepo; ledger: Ledger } {
  const db = openDatabase(path);
  const spaces = new SpacesRepo(db, { uidBase: 300_000, uidCount: 1000 });
  const ledger = new Ledger(db, {
    allocatable: { cpuMillicores: 64_000, memoryBytes: 64 * 1024 * MiB, storageBytes: 2 ** 40 },
  });
  for (const id of [SPACE_A, SPACE_B])
    if (!spaces.get(id))
      ledger.reserve({
        id,
        org: 'acme',
        ownerKey: 'A'.repeat(43),
        ownerFingerprint: 'SHA256:abc',
        cpuMillicores: 1000,
        memoryBytes: 256 * MiB,
        storageBytes: 64 * MiB,
        pids: 256,
        state: 'active',
        leaseExpiresAt: 1,
        graceUntil: 2,
      });
  return { db, spaces, ledger };
}
