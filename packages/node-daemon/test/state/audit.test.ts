import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcsError, auditEntryHash } from '@ocs/protocol';
import { ManualClock } from '@ocs/node-daemon/testing';
import { AuditLog, GENESIS_HASH, canonicalJson, scrubDetail } from '#src/state/audit.js';
import type { AuditInput } from '#src/state/audit.js';
import { verifyAuditFile } from '#src/state/audit-file.js';
import { openDatabase } from '#src/state/db.js';
import type { Database } from '#src/state/db.js';

const T0 = Date.UTC(2025, 0, 1);

function setup(db: Database = openDatabase(':memory:')) {
  const clock = new ManualClock(T0);
  return { db, clock, audit: new AuditLog(db, { clock }) };
}

const SAMPLE: AuditInput[] = [
  { actor: 'node', action: 'node.start', outcome: 'ok' },
  {
    actor: 'alice',
    action: 'space.create',
    target: 'sp_aaaaaaaaaaaaaaaaaaaa',
    outcome: 'ok',
    detail: { cpuMillicores: 500 },
  },
  {
    actor: 'bob',
    action: 'space.create',
    outcome: 'refused',
    code: 'capacity_exceeded',
    detail: { resource: 'memoryBytes', requested: 5, available: 1 },
  },
  { actor: 'SHA256:xyz', action: 'space.lock', target: 'sp_aaaaaaaaaaaaaaaaaaaa', outcome: 'ok' },
  {
    actor: 'node',
    action: 'space.destroy',
    target: 'sp_aaaaaaaaaaaaaaaaaaaa',
    outcome: 'failed',
    code: 'internal',
    detail: { step: 'storage' },
  },
];

function filled() {
  const s = setup();
  for (const e of SAMPLE) {
    s.audit.append(e);
    s.clock.advance(1000);
  }
  return s;
}

function dropTriggers(db: Database): void {
  db.exec('DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;');
}

test('entries chain from the genesis hash and verify', () => {
  const { audit } = filled();
  const { entries, head } = audit.page({ limit: 100 });
  assert.equal(entries.length, SAMPLE.length);
  assert.equal(entries[0]?.prevHash, GENESIS_HASH);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    assert.equal(e.seq, i + 1);
    assert.equal(e.at, new Date(T0 + i * 1000).toISOString());
    assert.match(e.hash, /^[0-9a-f]{64}$/);
    if (i > 0) assert.equal(e.prevHash, entries[i - 1]!.hash);
    assert.equal(e.hash, auditEntryHash(e), 'hash = SHA-256 over the canonical JSON of the fields and prevHash');
  }
  assert.equal(head, entries.at(-1)?.hash);
  assert.deepEqual(audit.verify(), { ok: true, count: SAMPLE.length, head });
});

test('an empty log verifies, with the genesis hash as head', () => {
  const { audit } = setup();
  assert.deepEqual(audit.verify(), { ok: true, count: 0, head: GENESIS_HASH });
  assert.deepEqual(audit.page({ limit: 10 }), { entries: [], head: GENESIS_HASH });
});

test('append returns what page later reads; absent fields stay absent', () => {
  const { audit } = setup();
  const a = audit.append(SAMPLE[0]!);
  const b = audit.append(SAMPLE[2]!);
  assert.deepEqual(audit.page({ limit: 10 }).entries, [a, b]);
  assert.equal('target' in a, false);
  assert.equal('code' in a, false);
  assert.equal('detail' in a, false);
  assert.equal(b.code, 'capacity_exceeded');
});

test('page: after, limit, cap, and the head of the whole log', () => {
  const { audit } = filled();
  const all = audit.page({ limit: 100 });
  const p = audit.page({ after: 2, limit: 2 });
  assert.deepEqual(
    p.entries.map((e) => e.seq),
    [3, 4],
  );
  assert.equal(p.head, all.head);
  assert.deepEqual(audit.page({ after: 5, limit: 10 }).entries, []);
  assert.equal(audit.page({ limit: 0 }).entries.length, 1, 'limit is at least 1');
  const { audit: big } = setup();
  for (let i = 0; i < 1005; i++) big.append({ actor: 'node', action: 'tick', outcome: 'ok' });
  assert.equal(big.page({ limit: 5000 }).entries.length, 1000);
  assert.deepEqual(big.head(), { seq: 1005, hash: big.page({ limit: 1 }).head });
});

test('the triggers refuse UPDATE and DELETE', () => {
  const { db } = filled();
  assert.throws(() => db.prepare(`UPDATE audit_log SET actor = 'mallory' WHERE seq = 2`).run(), /append-only/);
  assert.throws(() => db.prepare('DELETE FROM audit_log WHERE seq = 2').run(), /append-only/);
  assert.throws(() => db.prepare('DELETE FROM audit_log').run(), /append-only/);
});

test('changing any field of any row is reported at exactly that seq', () => {
  const changes: Record<string, (seq: number) => string> = {
    seq: (s) => `seq = ${s + 100}`,
    at: () => `at = '2030-01-01T00:00:00.000Z'`,
    actor: () => `actor = 'mallory'`,
    action: () => `action = 'space.nothing'`,
    target: () => `target = 'sp_bbbbbbbbbbbbbbbbbbbb'`,
    outcome: () => `outcome = CASE outcome WHEN 'ok' THEN 'failed' ELSE 'ok' END`,
    code: () => `code = CASE WHEN code IS NULL THEN 'internal' ELSE NULL END`,
    detail: () => `detail = '{"forged":true}'`,
    detailSpelling: () => `detail = CASE WHEN detail IS NULL THEN '{}' ELSE ' ' || detail END`,
    prev_hash: () => `prev_hash = '${'f'.repeat(64)}'`,
    hash: () => `hash = '${'e'.repeat(64)}'`,
  };
  for (let seq = 1; seq <= SAMPLE.length; seq++) {
    for (const [field, set] of Object.entries(changes)) {
      const { db, audit } = filled();
      dropTriggers(db); // an attacker with write access to the file
      db.prepare(`UPDATE audit_log SET ${set(seq)} WHERE seq = ?`).run(seq);
      const r = audit.verify();
      assert.equal(r.ok, false, `${field} of ${seq}`);
      assert.equal(r.ok === false && r.brokenAt, seq, `${field} of ${seq}: ${JSON.stringify(r)}`);
    }
  }
});

test('deleting a middle row is detected at the missing seq', () => {
  const { db, audit } = filled();
  dropTriggers(db);
  db.prepare('DELETE FROM audit_log WHERE seq = 3').run();
  const r = audit.verify();
  assert.equal(r.ok, false);
  assert.equal(r.ok === false && r.brokenAt, 3);
  assert.match(r.ok === false ? r.reason : '', /missing/);
  assert.equal(r.count, 2, 'count is how far the chain held');
});

test('deleting a row and re-chaining the rest is still detected (the next hash covers prevHash)', () => {
  const { db, audit } = filled();
  dropTriggers(db);
  const two = db.prepare('SELECT hash FROM audit_log WHERE seq = 2').pluck().get() as string;
  db.prepare('DELETE FROM audit_log WHERE seq = 3').run();
  db.prepare('UPDATE audit_log SET seq = seq - 1 WHERE seq > 3').run();
  db.prepare('UPDATE audit_log SET prev_hash = ? WHERE seq = 3').run(two);
  const r = audit.verify();
  assert.equal(r.ok === false && r.brokenAt, 3);
});

test('truncating the tail is caught only against an anchor kept elsewhere', () => {
  const { db, audit } = filled();
  const anchor = audit.head();
  assert.equal(audit.verify({ anchor }).ok, true);
  dropTriggers(db);
  db.prepare('DELETE FROM audit_log WHERE seq >= 4').run();
  assert.equal(audit.verify().ok, true, 'a shorter chain is self-consistent');
  const r = audit.verify({ anchor });
  assert.equal(r.ok === false && r.brokenAt, anchor.seq);
  assert.equal(audit.verify({ anchor: { seq: 2, hash: 'x' } }).ok, false, 'a rewritten entry differs from its anchor');
});

test('secret-looking detail keys and values are redacted before they are stored', () => {
  const { db, audit } = setup();
  const jwt = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl';
  const e = audit.append({
    actor: 'node',
    action: 'space.create',
    outcome: 'ok',
    detail: {
      token: 'tok-1',
      signature: 'sig-1',
      ownerKey: 'key-1',
      clientSecret: 'sec-1',
      Authorization: 'Bearer zzz',
      sealedKey: 'age-1',
      ownerKeyFingerprint: 'SHA256:kept',
      nested: { privateKey: 'priv-1', deeper: [{ apiKey: 'k-2' }, 'plain'] },
      pasted: jwt,
      pem: '-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----',
      age: 'AGE-SECRET-KEY-1QQQ',
      count: 3,
    },
  });
  assert.deepEqual(e.detail, {
    token: '[redacted]',
    signature: '[redacted]',
    ownerKey: '[redacted]',
    clientSecret: '[redacted]',
    Authorization: '[redacted]',
    sealedKey: '[redacted]',
    ownerKeyFingerprint: 'SHA256:kept',
    nested: { privateKey: '[redacted]', deeper: [{ apiKey: '[redacted]' }, 'plain'] },
    pasted: '[redacted]',
    pem: '[redacted]',
    age: '[redacted]',
    count: 3,
  });
  const stored = db.prepare('SELECT detail FROM audit_log').pluck().get() as string;
  for (const secret of [
    'tok-1',
    'sig-1',
    'key-1',
    'sec-1',
    'zzz',
    'age-1',
    'priv-1',
    'k-2',
    jwt,
    'MC4CAQ',
    'AGE-SECRET',
  ]) {
    assert.equal(stored.includes(secret), false, secret);
  }
  assert.equal(audit.verify().ok, true);
});

test('scrubDetail keeps to plain, bounded JSON', () => {
  class Handle {
    key = new Uint8Array(32);
  }
  const deep: Record<string, unknown> = {};
  let cur = deep;
  for (let i = 0; i < 20; i++) cur = (cur.d = {}) as Record<string, unknown>;
  const out = scrubDetail({
    n: Number.NaN,
    big: 10n,
    u: undefined,
    f: () => 1,
    h: new Handle(),
    when: new Date(T0),
    deep,
  });
  assert.deepEqual(Object.keys(out).sort(), ['big', 'deep', 'n', 'when']);
  assert.equal(out.n, null);
  assert.equal(out.big, '10');
  assert.equal(out.when, new Date(T0).toISOString());
  assert.match(JSON.stringify(out.deep), /too deep/);
  assert.deepEqual(
    scrubDetail({ blob: 'x'.repeat(1000), more: Array.from({ length: 50 }, () => 'y'.repeat(200)) }).truncated,
    true,
  );
});

test('canonical JSON does not depend on key order, so neither does the hash', () => {
  assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 'x' }] }), '{"a":[{"c":"x","d":2}],"b":1}');
  const one = setup().audit.append({ actor: 'a', action: 'x', outcome: 'ok', detail: { b: 1, a: 2 } });
  const two = setup().audit.append({ actor: 'a', action: 'x', outcome: 'ok', detail: { a: 2, b: 1 } });
  assert.equal(one.hash, two.hash);
});

test('append refuses malformed fields our own code chose (a bug, not something to record)', () => {
  const { audit } = setup();
  const bad: AuditInput[] = [
    { actor: '', action: 'x', outcome: 'ok' },
    { actor: 'a', action: 'x\nforged line', outcome: 'ok' },
    { actor: 'a', action: 'x'.repeat(300), outcome: 'ok' },
    { actor: 'a', action: 'x', outcome: 'maybe' as 'ok' },
  ];
  for (const b of bad) assert.throws(() => audit.append(b), TypeError, JSON.stringify(b));
  assert.equal(audit.head().seq, 0);
});

test('append stores hostile actors and targets escaped and bounded, never failing on them', () => {
  const { audit } = setup();
  const hostile = ['sp_\n\u001b[31m', 'x\u0000y', 'a'.repeat(300), '', 'line\u2028break', '\ud83d'.repeat(300)];
  for (const v of hostile) {
    const rec = audit.append({ actor: v || 'a', action: 'x', target: v, outcome: 'refused', code: 'not_found' });
    for (const text of [rec.actor, rec.target!]) {
      assert.ok(text.length >= 1 && text.length <= 256, `${text.length} characters`);
      // eslint-disable-next-line no-control-regex -- control characters are what is looked for
      assert.doesNotMatch(text, /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    }
  }
  assert.equal(audit.page({ limit: 10 }).entries[0]!.target, 'sp_\\u000a\\u001b[31m');
  assert.equal(audit.verify().ok, true);
});

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-audit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('appends from two processes at once keep one unbroken chain', async (t) => {
  const path = join(tempDir(t), 'node.db');
  openDatabase(path).close();
  const code = `
    const { openDatabase } = await import(${JSON.stringify(import.meta.resolve('#src/state/db.js'))});
    const { AuditLog } = await import(${JSON.stringify(import.meta.resolve('#src/state/audit.js'))});
    const db = openDatabase(${JSON.stringify(path)}, { busyTimeoutMs: 60000 });
    const audit = new AuditLog(db);
    for (let i = 0; i < 50; i++) audit.append({ actor: 'p' + process.pid, action: 'tick', outcome: 'ok', detail: { i } });
    db.close();`;
  const children = [0, 1].map(() => spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: 'inherit' }));
  await Promise.all(children.map((c) => once(c, 'exit')));
  assert.deepEqual(
    children.map((c) => c.exitCode),
    [0, 0],
  );
  const db = openDatabase(path);
  const r = new AuditLog(db).verify();
  db.close();
  assert.equal(r.ok, true);
  assert.equal(r.count, 100);
});

test('verifyAuditFile: read-only verdicts on a database file', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'node.db');
  const { db, audit } = setup(openDatabase(path));
  for (const e of SAMPLE) audit.append(e);
  // While the daemon still has it open:
  assert.deepEqual(verifyAuditFile(path), { ok: true, count: SAMPLE.length, head: audit.head().hash });
  dropTriggers(db);
  db.prepare(`UPDATE audit_log SET detail = '{"x":1}' WHERE seq = 4`).run();
  db.close();
  const before = readFileSync(path);
  const r = verifyAuditFile(path);
  assert.equal(r.ok, false);
  assert.equal(r.ok === false && r.brokenAt, 4);
  assert.deepEqual(readFileSync(path), before, 'verification wrote nothing');
});

test('verifyAuditFile refuses what it cannot judge', (t) => {
  const dir = tempDir(t);
  assert.throws(
    () => verifyAuditFile(join(dir, 'missing.db')),
    (e) => e instanceof OcsError && e.code === 'not_found',
  );
  writeFileSync(join(dir, 'junk.db'), 'this is not a database, just text long enough to have a header......');
  assert.throws(
    () => verifyAuditFile(join(dir, 'junk.db')),
    (e) => e instanceof OcsError && e.code === 'invalid_request',
  );
  writeFileSync(join(dir, 'empty.db'), '');
  assert.throws(
    () => verifyAuditFile(join(dir, 'empty.db')),
    (e) => e instanceof OcsError && e.code === 'invalid_request',
  );
});
