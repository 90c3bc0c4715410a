/**
 * bench/sqlite-driver: the replay cache's insert, the one database write on every signed
 * request's path, with the two SQLite bindings Node 24 offers: better-sqlite3 (what the daemon
 * and the space processes use, a native addon built for the pinned runtime) and the runtime's
 * own `node:sqlite` (DatabaseSync). Same schema as the daemon's `nonces` table (migrations 3
 * and 4), same pragmas as its database (WAL, synchronous=NORMAL, secure_delete), a file in a
 * temporary directory. Reports node:sqlite's inserts per second as a ratio to better-sqlite3's,
 * rounds alternating so neither gets the warmer cache. Decision rule (issue 22): switch only if
 * the ratio is >= 1 and node:sqlite is sound for us (it is still marked "release candidate").
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import Database from 'better-sqlite3';
import { ratePerSecond, report } from './measure.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = 3;
const SCHEMA = `CREATE TABLE nonces (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, charged_to TEXT NOT NULL DEFAULT '') STRICT, WITHOUT ROWID;
CREATE INDEX nonces_expiry ON nonces (expires_at);`;
const PRAGMAS = ['journal_mode = WAL', 'synchronous = NORMAL', 'secure_delete = ON', 'busy_timeout = 5000'];
const INSERT = 'INSERT INTO nonces (key, charged_to, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING';

const dir = mkdtempSync(join(tmpdir(), 'ocs-bench-sqlite-'));
// Keys like the daemon's: a key id and a 32-byte nonce; unique, so each insert writes a row.
let seq = 0;
const prefix = randomBytes(8).toString('hex');
const nextKey = () => `${prefix}:${(seq++).toString(36).padStart(12, '0')}:${'n'.repeat(43)}`;
const expires = () => Math.floor(Date.now() / 1000) + 300;

function betterSqlite(file: string): () => void {
  const db = new Database(file);
  for (const p of PRAGMAS) db.pragma(p);
  db.exec(SCHEMA);
  const insert = db.prepare(INSERT);
  return () => {
    if (insert.run(nextKey(), 'owner:k1', expires()).changes !== 1) throw new Error('no row written');
  };
}

function nodeSqlite(file: string): () => void {
  const db = new DatabaseSync(file);
  for (const p of PRAGMAS) db.exec(`PRAGMA ${p}`);
  db.exec(SCHEMA);
  const insert = db.prepare(INSERT);
  return () => {
    if (Number(insert.run(nextKey(), 'owner:k1', expires()).changes) !== 1) throw new Error('no row written');
  };
}

try {
  const better: number[] = [];
  const builtin: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    better.push(ratePerSecond(betterSqlite(join(dir, `better-${r}.db`)), SECONDS));
    builtin.push(ratePerSecond(nodeSqlite(join(dir, `node-${r}.db`)), SECONDS));
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  report('sqlite-driver', {
    runtime: `Node.js ${process.version}`,
    'better-sqlite3 inserts/s (median)': median(better),
    'node:sqlite inserts/s (median)': median(builtin),
    'ratio node:sqlite / better-sqlite3': median(builtin) / median(better),
  });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
