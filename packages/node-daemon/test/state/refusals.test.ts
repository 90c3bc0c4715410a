import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ErrorCode } from '@ocs/protocol';
import { ManualClock } from '@ocs/node-daemon/testing';
import { createLogger } from '#src/logger.js';
import { openDatabase } from '#src/state/db.js';
import { AuditLog } from '#src/state/audit.js';
import { DROPPED_ACTION, RefusalLog } from '#src/state/refusals.js';

function setup() {
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const db = openDatabase(':memory:');
  const audit = new AuditLog(db, { clock });
  const log = new RefusalLog(
    { audit, clock, logger: createLogger({ level: 'silent' }) },
    { perWindow: 3, windowMs: 60_000 },
  );
  const counted = new Map<ErrorCode, number>();
  log.count = (code) => void counted.set(code, (counted.get(code) ?? 0) + 1);
  return { db, clock, audit, log, counted };
}

test('RefusalLog: unauthenticated refusals are counted, never chained', () => {
  const { audit, log, counted } = setup();
  for (let i = 0; i < 1000; i++) log.record({ action: 'GET /v1/spaces', code: 'token_missing' });
  log.flush(true);
  assert.equal(counted.get('token_missing'), 1000);
  assert.equal(audit.head().seq, 0);
});

test('RefusalLog: a principal is chained up to its budget, the rest summarized once per window', () => {
  const { audit, log, clock, counted } = setup();
  const mallory = { key: 'token:iss mallory', actor: 'mallory' };
  const alice = { key: 'token:iss alice', actor: 'alice' };
  for (let i = 0; i < 500; i++)
    log.record({ chainAs: mallory, action: 'GET /v1/spaces/:spaceId', target: `sp_${i}`, code: 'not_found' });
  log.record({ chainAs: alice, action: 'POST /v1/spaces/:spaceId/lock', code: 'not_owner' });
  assert.equal(counted.get('not_found'), 500);
  let entries = audit.page({ limit: 1000 }).entries;
  assert.deepEqual(
    entries.map((e) => e.actor),
    ['mallory', 'mallory', 'mallory', 'alice'],
  );
  // Nothing is summarized while the window runs; then exactly once.
  log.flush();
  assert.equal(audit.head().seq, 4);
  clock.advance(60_000);
  log.flush();
  log.flush();
  entries = audit.page({ after: 4, limit: 1000 }).entries;
  assert.equal(entries.length, 1);
  assert.equal(entries[0]!.action, DROPPED_ACTION);
  assert.equal(entries[0]!.actor, 'mallory');
  assert.deepEqual(entries[0]!.detail, {
    dropped: 497,
    codes: { not_found: 497 },
    from: '2030-01-01T00:00:00.000Z',
    until: '2030-01-01T00:01:00.000Z',
  });
  // A new window, a new budget.
  log.record({ chainAs: mallory, action: 'GET /v1/spaces/:spaceId', code: 'not_found' });
  assert.equal(audit.head().seq, 6);
  assert.equal(audit.verify().ok, true);
});

test('RefusalLog never throws, even when the audit log cannot be written', () => {
  const { db, log, counted } = setup();
  db.exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
  log.record({ chainAs: { key: 'k', actor: 'a' }, action: 'x', code: 'not_found' });
  assert.equal(counted.get('not_found'), 1);
});
