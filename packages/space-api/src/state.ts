/**
 * The space process's own database, in its home inside the space's encrypted storage, owned by
 * its uid. It keeps the replay cache, so a nonce seen before an idle exit is still refused after
 * the restart, and a journal of what the owner asked for (the broker audits the host side).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import {
  OcsError,
  RefusalBudget,
  TableNonceStore,
  printable,
  type DroppedRefusals,
  type NonceStore,
} from '@ocs/protocol';

export interface FileRecord {
  name: string;
  sizeBytes: number;
  sha256: string;
  uploadedAt: string;
}

export interface SpaceState extends NonceStore {
  putFile(f: FileRecord): void;
  listFiles(): FileRecord[];
  deleteFile(name: string): boolean;
  /**
   * Records what the owner asked for. `target` is caller text (bounded and escaped here);
   * refusals are bounded per window, the rest counted into one summary row.
   */
  journal(entry: {
    op: string;
    target?: string | undefined;
    outcome: 'ok' | 'refused' | 'failed';
    code?: string;
  }): void;
  /** Writes the summaries of refusals not journaled (at exit). */
  flush(): void;
  /**
   * Until when (ms) nonces are held only in memory because the space's storage was full: the
   * process must not exit before then, or a replay of those requests would be accepted.
   */
  unsavedUntil(now: number): number;
  close(): void;
}

const MAX_NONCES = 1_000_000;
/** Only the owner's key enters this cache, so its share is the whole of it. */
const NONCES_PER_PARTITION = MAX_NONCES;

export function openSpaceState(
  dataDir: string,
  opts: { now?: () => number; refusals?: RefusalBudget } = {},
): SpaceState {
  const now = opts.now ?? Date.now;
  const refusals = opts.refusals ?? new RefusalBudget();
  const dir = join(dataDir, 'state');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const db = new BetterSqlite3(join(dir, 'space.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('trusted_schema = OFF');
  db.exec(`
    CREATE TABLE IF NOT EXISTS nonces (
      key        TEXT PRIMARY KEY,
      expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
    CREATE TABLE IF NOT EXISTS files (
      name        TEXT PRIMARY KEY,
      size_bytes  INTEGER NOT NULL,
      sha256      TEXT NOT NULL,
      uploaded_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE IF NOT EXISTS journal (
      seq     INTEGER PRIMARY KEY,
      at      TEXT NOT NULL,
      op      TEXT NOT NULL,
      target  TEXT,
      outcome TEXT NOT NULL,
      code    TEXT
    ) STRICT;
  `);
  // Columns added later; a space created before them keeps its database.
  addColumn(db, 'nonces', 'charged_to', `TEXT NOT NULL DEFAULT ''`);
  addColumn(db, 'journal', 'detail', 'TEXT');
  const stmt = {
    expired: db.prepare('SELECT charged_to AS p, count(*) AS n FROM nonces WHERE expires_at < ? GROUP BY charged_to'),
    sweep: db.prepare('DELETE FROM nonces WHERE expires_at < ?'),
    held: db.prepare('SELECT charged_to AS p, count(*) AS n FROM nonces GROUP BY charged_to'),
    insert: db.prepare(
      'INSERT INTO nonces (key, charged_to, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING',
    ),
    putFile: db.prepare(
      'INSERT INTO files (name, size_bytes, sha256, uploaded_at) VALUES (@name, @sizeBytes, @sha256, @uploadedAt)',
    ),
    listFiles: db.prepare(
      'SELECT name, size_bytes AS sizeBytes, sha256, uploaded_at AS uploadedAt FROM files ORDER BY name',
    ),
    deleteFile: db.prepare('DELETE FROM files WHERE name = ?'),
    journal: db.prepare('INSERT INTO journal (at, op, target, outcome, code, detail) VALUES (?, ?, ?, ?, ?, ?)'),
  };
  const rows = (r: unknown[]) => (r as { p: string; n: number }[]).map((x) => [x.p, x.n] as const);
  // A space whose storage its workloads filled must still take its owner's requests (to delete
  // what filled it): nonces that cannot be written are kept here, and the process stays up
  // until the last of them expires.
  const unsaved = new Map<string, number>();
  const insertNonce = (key: string, partition: string, expiresAt: number): number => {
    // expiresAt is in seconds (the signature's `expires`), like the table's column.
    const t = now() / 1000;
    for (const [k, exp] of unsaved) if (exp <= t) unsaved.delete(k);
    if (unsaved.has(key)) return 0;
    try {
      return stmt.insert.run(key, partition, expiresAt).changes;
    } catch (err) {
      if (!isStorageFull(err)) throw err;
      unsaved.set(key, expiresAt);
      return 1;
    }
  };
  const nonces = new TableNonceStore(
    {
      insert: insertNonce,
      sweep: db.transaction((t: number) => {
        const removed = rows(stmt.expired.all(t));
        stmt.sweep.run(t);
        return removed;
      }),
      countByPartition: () => rows(stmt.held.all()),
    },
    { maxEntries: MAX_NONCES, maxPerPartition: NONCES_PER_PARTITION },
  );
  // The journal is best effort when the space's storage is full (the broker audits the host side).
  const write = (op: string, target: string | null, outcome: string, code: string | null, detail: string | null) => {
    try {
      stmt.journal.run(new Date(now()).toISOString(), op, target, outcome, code, detail);
    } catch (err) {
      if (!isStorageFull(err)) throw err;
    }
  };
  const summarize = (dropped: DroppedRefusals[]) => {
    for (const d of dropped) {
      const detail = JSON.stringify({ dropped: d.dropped, codes: d.codes, from: d.from, until: d.until });
      write('journal.refusals-dropped', null, 'refused', null, detail);
    }
  };
  return {
    remember: (keyId, nonce, expiresAt, t, partition) => nonces.remember(keyId, nonce, expiresAt, t, partition),
    putFile(f) {
      try {
        stmt.putFile.run(f);
      } catch (err) {
        if (!isStorageFull(err)) throw err;
        throw new OcsError('budget_exceeded', "the space's storage is full", { resource: 'storageBytes' });
      }
    },
    listFiles() {
      return stmt.listFiles.all() as FileRecord[];
    },
    deleteFile(name) {
      return stmt.deleteFile.run(name).changes === 1;
    },
    journal(e) {
      const target = e.target === undefined ? null : printable(e.target);
      if (e.outcome === 'ok') {
        write(e.op, target, e.outcome, null, null);
        return;
      }
      const { record, due } = refusals.admit('owner', 'owner', e.code ?? 'internal', now());
      summarize(due);
      if (record) write(e.op, target, e.outcome, e.code ?? null, null);
    },
    flush() {
      summarize(refusals.drain(now(), true));
    },
    unsavedUntil(t) {
      let until = 0;
      for (const exp of unsaved.values()) if (exp * 1000 > t && exp * 1000 > until) until = exp * 1000;
      return until;
    },
    close() {
      db.close();
    },
  };
}

/** SQLite's "database or disk is full" (the space's storage, filled by its workloads). */
function isStorageFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_WRITE';
}

function addColumn(db: BetterSqlite3.Database, table: string, column: string, decl: string): void {
  const cols = db.pragma(`table_info(${table})`) as { name: string }[];
  if (!cols.some((c) => c.name === column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${decl}`);
}
