/**
 * `ocs-node audit verify`: checks the audit chain of a database file without changing it, so
 * it can run beside a live daemon or on a copy taken off a suspect machine.
 */
import { existsSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import { OcsError } from '@ocs/protocol';
import { iterateRows, verifyRows } from './audit.js';
import type { AuditAnchor, VerifyResult } from './audit.js';
import { LATEST_VERSION, schemaVersion } from './migrations.js';

/**
 * Opens `dbPath` read-only (no migration, no write) and verifies its audit chain.
 * `anchor`: a head recorded elsewhere earlier; a log cut back below it, or rewritten, fails.
 * @returns the verdict: `{ ok, count, head }` plus `brokenAt` and `reason` when broken.
 * @throws OcsError not_found when there is no such file; invalid_request when it is not a
 *   node database this version understands (nothing was checked, so there is no verdict).
 */
export function verifyAuditFile(dbPath: string, opts: { anchor?: AuditAnchor } = {}): VerifyResult {
  // better-sqlite3's fileMustExist covers this too, but with a message naming SQLite internals.
  if (!existsSync(dbPath)) throw new OcsError('not_found', `no database at ${dbPath}`);
  const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
  try {
    let version: number;
    try {
      version = schemaVersion(db);
    } catch {
      throw new OcsError('invalid_request', `${dbPath} is not an SQLite database`);
    }
    const hasAudit =
      db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_log'`).get() !== undefined;
    if (version < 1 || !hasAudit) throw new OcsError('invalid_request', `${dbPath} is not an ocs node database`);
    if (version > LATEST_VERSION) {
      throw new OcsError(
        'invalid_request',
        `${dbPath} has schema version ${version}, newer than this tool knows (${LATEST_VERSION})`,
      );
    }
    // One read transaction: a consistent snapshot while the daemon may be appending.
    return db.transaction(() => verifyRows(iterateRows(db), opts.anchor))();
  } finally {
    db.close();
  }
}
