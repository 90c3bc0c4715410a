import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openDatabase } from './db.js';
import { LATEST_VERSION, MIGRATIONS, migrate, schemaVersion } from './migrations.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-db-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const mode = (p: string): number => statSync(p).mode & 0o777;

test('a new database file is created 0600, and so are its WAL files', (t) => {
  const path = join(tempDir(t), 'node.db');
  const old = process.umask(0o000); // the most permissive umask must not leak through
  try {
    const db = openDatabase(path);
    db.prepare(`INSERT INTO uid_range (id, base, count) VALUES (1, 1000, 10)`).run();
    assert.equal(mode(path), 0o600);
    assert.equal(mode(`${path}-wal`), 0o600);
    assert.equal(mode(`${path}-shm`), 0o600);
    db.close();
  } finally {
    process.umask(old);
  }
});

test('an existing database file (and stale WAL files) are tightened to 0600', (t) => {
  const path = join(tempDir(t), 'node.db');
  openDatabase(path).close();
  chmodSync(path, 0o644);
  writeFileSync(`${path}-shm`, '');
  chmodSync(`${path}-shm`, 0o666);
  const db = openDatabase(path);
  assert.equal(mode(path), 0o600);
  assert.equal(mode(`${path}-shm`), 0o600);
  db.close();
});

test('a symlink where the database should be is refused', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'elsewhere'), '');
  symlinkSync(join(dir, 'elsewhere'), join(dir, 'node.db'));
  assert.throws(() => openDatabase(join(dir, 'node.db')), /ELOOP/);
});

test('pragmas: WAL, foreign keys, NORMAL sync, busy timeout, schema at the latest version', (t) => {
  const db = openDatabase(join(tempDir(t), 'node.db'), { busyTimeoutMs: 1234 });
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
  assert.equal(db.pragma('synchronous', { simple: true }), 1);
  assert.equal(db.pragma('busy_timeout', { simple: true }), 1234);
  assert.equal(schemaVersion(db), LATEST_VERSION);
  db.close();
});

test(':memory: opens a private, migrated database', () => {
  const db = openDatabase(':memory:');
  assert.equal(schemaVersion(db), LATEST_VERSION);
  assert.ok(db.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'spaces'`).get());
  db.close();
});

test('migrations are idempotent: reopening and re-running change nothing', (t) => {
  const path = join(tempDir(t), 'node.db');
  const db = openDatabase(path);
  db.prepare(`INSERT INTO uid_range (id, base, count) VALUES (1, 1000, 10)`).run();
  db.close();
  const again = openDatabase(path);
  assert.equal(migrate(again), LATEST_VERSION);
  assert.equal(migrate(again), LATEST_VERSION);
  assert.deepEqual(again.prepare('SELECT base, count FROM uid_range').get(), { base: 1000, count: 10 });
  again.close();
});

test('migrations run in order and only once each', () => {
  const db = openDatabase(':memory:');
  const ran: number[] = [];
  const extra = [
    ...MIGRATIONS,
    { version: LATEST_VERSION + 1, name: 'a', up: () => void ran.push(LATEST_VERSION + 1) },
    { version: LATEST_VERSION + 2, name: 'b', up: () => void ran.push(LATEST_VERSION + 2) },
  ];
  assert.equal(migrate(db, [...extra].reverse()), LATEST_VERSION + 2);
  assert.equal(migrate(db, extra), LATEST_VERSION + 2);
  assert.deepEqual(ran, [LATEST_VERSION + 1, LATEST_VERSION + 2]);
  db.close();
});

test("version 10 rebuilds the spaces table (its states' CHECK) keeping every row and every reference to it", (t) => {
  const path = join(tempDir(t), 'node.db');
  // A database as a daemon of schema 9 left it: a space, its container, a published port.
  const old = new BetterSqlite3(path);
  old.pragma('foreign_keys = ON');
  migrate(
    old,
    MIGRATIONS.filter((m) => m.version <= 9),
  );
  const id = `sp_${'a'.repeat(20)}`;
  old
    .prepare(
      `INSERT INTO spaces (id, org, owner_key, owner_fingerprint, cpu_millicores, memory_bytes, storage_bytes, state, uid,
       lease_expires_at, grace_until, created_at, updated_at, subnet, ports, egress, remap_from)
       VALUES (?, 'org', ?, 'SHA256:x', 100, 1, 2, 'locked', 5000, 10, 20, 1, 2, '10.0.0.0/26', 3, NULL, '{"x":1}')`,
    )
    .run(id, 'k'.repeat(43));
  old
    .prepare(
      `INSERT INTO workloads (id, space_id, kind, name, cpu_millicores, memory_bytes, storage_bytes, pids, spec, state, created_at)
       VALUES ('ctr_x', ?, 'container', 'web', 1, 1, 0, 1, '{}', 'ready', 1)`,
    )
    .run(id);
  old.prepare(`INSERT INTO published_ports VALUES (30001, ?, 'tcp', 'ctr_x', 80, 1)`).run(id);
  old.close();

  const db = openDatabase(path);
  assert.equal(schemaVersion(db), LATEST_VERSION);
  const row = db.prepare('SELECT * FROM spaces WHERE id = ?').get(id) as Record<string, unknown>;
  assert.equal(row.state, 'locked');
  assert.equal(row.subnet, '10.0.0.0/26');
  assert.equal(row.ports, 3);
  assert.equal(row.remap_from, '{"x":1}');
  assert.equal(row.import_from, null);
  assert.deepEqual(db.pragma('foreign_key_check'), []);
  assert.equal(db.pragma('foreign_keys', { simple: true }), 1, 'foreign keys are on again');
  // The references still hold: a workload of no space is refused, the new states are accepted.
  assert.throws(() =>
    db
      .prepare(
        `INSERT INTO workloads (id, space_id, kind, name, cpu_millicores, memory_bytes, storage_bytes, pids, spec, state, created_at)
         VALUES ('ctr_y', 'sp_bbbbbbbbbbbbbbbbbbbb', 'container', 'w', 1, 1, 0, 1, '{}', 'ready', 1)`,
      )
      .run(),
  );
  db.prepare(`UPDATE spaces SET state = 'moving' WHERE id = ?`).run(id);
  assert.throws(() => db.prepare(`UPDATE spaces SET state = 'gone' WHERE id = ?`).run(id));
  db.close();
});

test('a database written by a newer daemon is refused, not guessed at', (t) => {
  const path = join(tempDir(t), 'node.db');
  const db = openDatabase(path);
  db.pragma(`user_version = ${LATEST_VERSION + 1}`);
  db.close();
  assert.throws(() => openDatabase(path), /newer than this daemon knows/);
});

test('a second process waits for the write lock instead of failing (busy_timeout)', async (t) => {
  const path = join(tempDir(t), 'node.db');
  openDatabase(path).close();
  const dbUrl = new URL('./db.js', import.meta.url).href;
  // The child takes the write lock, says so, holds it 400 ms, then commits.
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { openDatabase } from ${JSON.stringify(dbUrl)};
       const db = openDatabase(${JSON.stringify(path)});
       db.exec('BEGIN IMMEDIATE');
       db.prepare("INSERT INTO uid_range (id, base, count) VALUES (1, 1000, 10)").run();
       process.stdout.write('locked\\n');
       setTimeout(() => { db.exec('COMMIT'); db.close(); }, 400);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => b.toString().includes('locked') && resolve());
    child.on('exit', () => reject(new Error('child exited early')));
  });
  const started = Date.now();
  const db = openDatabase(path); // its migration check takes the write lock: it waits here
  db.prepare('UPDATE uid_range SET count = 20 WHERE id = 1').run();
  assert.ok(Date.now() - started >= 200, 'the write should have waited for the lock');
  assert.equal(db.prepare('SELECT count FROM uid_range').pluck().get(), 20);
  db.close();
  if (child.exitCode === null) await once(child, 'exit');
  assert.equal(child.exitCode, 0);
});
