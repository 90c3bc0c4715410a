/**
 * The node daemon's own database: one SQLite file, owned by root and readable by nobody else.
 * It holds space records, the capacity ledger and the audit log; never a key that opens storage.
 */
import { closeSync, constants, fchmodSync, openSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import { migrate } from './migrations.js';

/** A better-sqlite3 connection. */
export type Database = BetterSqlite3.Database;

export interface OpenDatabaseOptions {
  /**
   * How long a writer waits for another connection (possibly another process) to finish its
   * transaction before giving up with SQLITE_BUSY. Waiting is what we want: the ledger's
   * transactions are short, and failing would turn contention into spurious refusals.
   */
  busyTimeoutMs?: number;
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * Opens (creating if needed) the daemon's database at `path` and brings its schema up to date.
 *
 * The file is created 0600 and re-chmodded to 0600 if it already exists, because space records
 * name owners and the audit log is evidence. SQLite gives the `-wal` and `-shm` files the same
 * mode as the database. The directory's own permissions are the caller's business (stateDir).
 *
 * `:memory:` gives a private in-memory database for unit tests.
 */
export function openDatabase(path: string, opts: OpenDatabaseOptions = {}): Database {
  const busyTimeoutMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (path !== ':memory:') {
    for (const p of [path, `${path}-wal`, `${path}-shm`]) restrictMode(p, p === path);
  }
  const db = new BetterSqlite3(path, { timeout: busyTimeoutMs });
  try {
    db.pragma(`busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
    // WAL: readers (metrics, audit pages, `audit verify`) never block the writer and vice versa.
    db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode can lose the last commits on power loss but never corrupts; the host is
    // the source of truth and reconciliation repairs records on start.
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    // Schema code (triggers, defaults) must not call functions an attacker could have planted.
    db.pragma('trusted_schema = OFF');
    // Deleted rows are overwritten, not left in free pages (a removed workload's name, a destroyed space's record).
    db.pragma('secure_delete = ON');
    migrate(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Creates `path` 0600 (when `create`) or tightens an existing file to 0600. O_NOFOLLOW: a
 * symlink planted where the database should be must not redirect root's writes elsewhere.
 */
function restrictMode(path: string, create: boolean): void {
  const flags = constants.O_RDWR | constants.O_NOFOLLOW | (create ? constants.O_CREAT : 0);
  let fd: number;
  try {
    fd = openSync(path, flags, 0o600);
  } catch (err) {
    if (!create && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    // fchmod on the descriptor: no window between checking the path and changing it. It also
    // undoes a permissive umask, which openSync's mode argument is subject to.
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}
