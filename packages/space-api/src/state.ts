/**
 * The space process's own database, in its home inside the space's encrypted storage, owned by
 * its uid. It keeps the replay cache, so a nonce seen before an idle exit is still refused after
 * the restart, and a journal of what the owner asked for (the broker audits the host side).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { TableNonceStore, type NonceStore } from '@ocs/protocol';

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
  journal(entry: { op: string; target?: string; outcome: 'ok' | 'refused' | 'failed'; code?: string }): void;
  close(): void;
}

const MAX_NONCES = 1_000_000;

export function openSpaceState(dataDir: string): SpaceState {
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
  const stmt = {
    sweep: db.prepare('DELETE FROM nonces WHERE expires_at < ?'),
    count: db.prepare('SELECT count(*) AS n FROM nonces').pluck(),
    insert: db.prepare('INSERT INTO nonces (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING'),
    putFile: db.prepare(
      'INSERT INTO files (name, size_bytes, sha256, uploaded_at) VALUES (@name, @sizeBytes, @sha256, @uploadedAt)',
    ),
    listFiles: db.prepare(
      'SELECT name, size_bytes AS sizeBytes, sha256, uploaded_at AS uploadedAt FROM files ORDER BY name',
    ),
    deleteFile: db.prepare('DELETE FROM files WHERE name = ?'),
    journal: db.prepare('INSERT INTO journal (at, op, target, outcome, code) VALUES (?, ?, ?, ?, ?)'),
  };
  const nonces = new TableNonceStore(
    {
      insert: (key, expiresAt) => stmt.insert.run(key, expiresAt).changes,
      sweep: (now) => void stmt.sweep.run(now),
      count: () => stmt.count.get() as number,
    },
    MAX_NONCES,
  );
  return {
    remember: (keyId, nonce, expiresAt, now) => nonces.remember(keyId, nonce, expiresAt, now),
    putFile(f) {
      stmt.putFile.run(f);
    },
    listFiles() {
      return stmt.listFiles.all() as FileRecord[];
    },
    deleteFile(name) {
      return stmt.deleteFile.run(name).changes === 1;
    },
    journal(e) {
      stmt.journal.run(new Date().toISOString(), e.op, e.target ?? null, e.outcome, e.code ?? null);
    },
    close() {
      db.close();
    },
  };
}
