import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcsError } from '@ocs/protocol';
import type { SpaceState } from '@ocs/protocol';
import { ManualClock } from '@ocs/node-daemon/testing';
import { openDatabase } from '#src/state/db.js';
import { SPACE_STATES } from '@ocs/protocol';
import { SpacesRepo, canTransition } from '#src/state/spaces-repo.js';
import type { NewSpace } from '#src/state/spaces-repo.js';

const KEY = 'A'.repeat(43);
let n = 0;
function newSpace(over: Partial<NewSpace> = {}): NewSpace {
  n++;
  return {
    id: `sp_${String(n).padStart(20, 'a')}`,
    org: 'acme',
    ownerKey: KEY,
    ownerFingerprint: 'SHA256:abc',
    cpuMillicores: 500,
    memoryBytes: 1 << 20,
    storageBytes: 1 << 30,
    leaseExpiresAt: 10_000,
    graceUntil: 20_000,
    ...over,
  };
}

function setup(opts: { uidBase?: number; uidCount?: number } = {}) {
  const clock = new ManualClock(1_000);
  const db = openDatabase(':memory:');
  const repo = new SpacesRepo(db, { uidBase: opts.uidBase ?? 200_000, uidCount: opts.uidCount ?? 100, clock });
  return { db, repo, clock };
}

function isCode(code: string, state?: SpaceState) {
  return (err: unknown) =>
    err instanceof OcsError && err.code === code && (state === undefined || err.details?.state === state);
}

test('insert fills uid, state and times; get and list read it back', () => {
  const { repo, clock } = setup();
  const row = repo.insert(newSpace({ name: 'web', pids: 64 }));
  assert.equal(row.state, 'creating');
  assert.equal(row.uid, 200_000);
  assert.equal(row.createdAt, clock.now());
  assert.equal(row.updatedAt, clock.now());
  assert.equal(row.name, 'web');
  assert.equal(row.pids, 64);
  assert.equal(row.releasedAt, null);
  assert.deepEqual(repo.get(row.id), row);
  assert.equal(repo.get('sp_bbbbbbbbbbbbbbbbbbbb'), undefined);
});

test('list filters by org and keeps creation order', () => {
  const { repo, clock } = setup();
  const a = repo.insert(newSpace({ org: 'a' }));
  clock.advance(1);
  const b = repo.insert(newSpace({ org: 'b' }));
  clock.advance(1);
  const c = repo.insert(newSpace({ org: 'a' }));
  assert.deepEqual(
    repo.list().map((r) => r.id),
    [a.id, b.id, c.id],
  );
  assert.deepEqual(
    repo.list({ org: 'a' }).map((r) => r.id),
    [a.id, c.id],
  );
  assert.deepEqual(repo.list({ org: 'zzz' }), []);
});

test('insert refuses malformed records', () => {
  const { repo } = setup();
  const cases: [string, Partial<NewSpace>][] = [
    ['id', { id: 'sp_short' }],
    ['id', { id: 'vm_aaaaaaaaaaaaaaaaaaaa' }],
    ['ownerKey', { ownerKey: 'not a key' }],
    ['ownerKey', { ownerKey: `${KEY}=` }],
    ['org', { org: '' }],
    ['cpuMillicores', { cpuMillicores: -1 }],
    ['memoryBytes', { memoryBytes: 1.5 }],
    ['storageBytes', { storageBytes: Number.NaN }],
    ['pids', { pids: 0 }],
    ['graceUntil', { leaseExpiresAt: 5, graceUntil: 4 }],
  ];
  for (const [field, over] of cases) {
    assert.throws(
      () => repo.insert(newSpace(over)),
      (e) => e instanceof OcsError && e.code === 'invalid_request' && e.details?.field === field,
      field,
    );
  }
  assert.equal(repo.list().length, 0);
});

test('a duplicate id is a conflict', () => {
  const { repo } = setup();
  const s = newSpace();
  repo.insert(s);
  assert.throws(() => repo.insert(s), isCode('conflict'));
});

test('uids come from the range, one per space, and run out with capacity_exceeded', () => {
  const { repo } = setup({ uidBase: 5000, uidCount: 3 });
  assert.equal(repo.nextUid(), 5000);
  assert.deepEqual(
    [1, 2, 3].map(() => repo.insert(newSpace()).uid),
    [5000, 5001, 5002],
  );
  assert.throws(
    () => repo.insert(newSpace()),
    (e) => e instanceof OcsError && e.code === 'capacity_exceeded' && e.details?.resource === 'uids',
  );
});

test('a destroyed space frees its uid, but uids never used are preferred', () => {
  const { repo } = setup({ uidBase: 5000, uidCount: 4 });
  const a = repo.insert(newSpace());
  const b = repo.insert(newSpace());
  repo.markDestroyed(a.id);
  assert.equal(repo.insert(newSpace()).uid, 5002, 'fresh uids first');
  assert.equal(repo.insert(newSpace()).uid, 5003);
  assert.equal(repo.insert(newSpace()).uid, 5000, 'then the lowest uid no live space holds');
  assert.throws(() => repo.insert(newSpace()), isCode('capacity_exceeded'));
  repo.setState(b.id, ['creating'], 'destroying');
  assert.throws(() => repo.insert(newSpace()), isCode('capacity_exceeded'), 'destroying still holds its uid');
  repo.setState(b.id, ['destroying'], 'destroyed');
  assert.equal(repo.insert(newSpace()).uid, 5001);
});

test('the database itself refuses two live spaces with one uid', () => {
  const { db, repo } = setup();
  const a = repo.insert(newSpace());
  const b = repo.insert(newSpace());
  assert.throws(() => db.prepare('UPDATE spaces SET uid = ? WHERE id = ?').run(a.uid, b.id), /UNIQUE/);
});

test('a uid held outside a shrunk range is never handed out again', () => {
  const { db, repo } = setup({ uidBase: 5000, uidCount: 10 });
  const far = repo.insert(newSpace());
  db.prepare('UPDATE spaces SET uid = 5009 WHERE id = ?').run(far.id);
  const smaller = new SpacesRepo(db, { uidBase: 5008, uidCount: 2 });
  assert.equal(smaller.insert(newSpace()).uid, 5008);
  assert.throws(() => smaller.insert(newSpace()), isCode('capacity_exceeded'));
});

test('setState is a compare-and-set', () => {
  const { repo, clock } = setup();
  const s = repo.insert(newSpace());
  clock.advance(5);
  const active = repo.setState(s.id, ['creating'], 'active');
  assert.equal(active.state, 'active');
  assert.equal(active.updatedAt, 1_005);
  // A second caller that still believes the space is creating loses.
  assert.throws(() => repo.setState(s.id, ['creating'], 'failed'), isCode('conflict', 'active'));
  assert.equal(repo.get(s.id)?.state, 'active');
  assert.throws(() => repo.setState('sp_bbbbbbbbbbbbbbbbbbbb', ['creating'], 'active'), isCode('not_found'));
});

test('setState refuses moves the state machine does not allow, even when `from` matches', () => {
  const { repo } = setup();
  const s = repo.insert(newSpace());
  repo.setState(s.id, ['creating'], 'failed');
  assert.throws(() => repo.setState(s.id, ['failed'], 'active'), isCode('conflict', 'failed'));
  repo.setState(s.id, ['failed'], 'destroying');
  const gone = repo.setState(s.id, ['destroying'], 'destroyed');
  assert.notEqual(gone.releasedAt, null, 'destroyed releases capacity');
  for (const to of SPACE_STATES) assert.throws(() => repo.setState(s.id, ['destroyed'], to), isCode('conflict'));
});

test('canTransition: the table', () => {
  const allowed: Record<SpaceState, SpaceState[]> = {
    creating: ['active', 'locked', 'failed', 'destroying'],
    active: ['locking', 'locked', 'expired', 'failed', 'destroying'],
    locking: ['locked', 'expired', 'failed', 'destroying'],
    locked: ['active', 'expired', 'failed', 'destroying', 'moving'],
    // An expired space a drain exports (in its grace, its owner may restore it elsewhere).
    expired: ['locked', 'failed', 'destroying', 'moving'],
    failed: ['destroying'],
    destroying: ['destroyed'],
    destroyed: [],
    // A move: the target's import becomes its own only through `prepared`, on the commit; the
    // source's space goes back to `locked`, or through `committing` to its tombstone.
    importing: ['prepared', 'failed', 'destroying'],
    prepared: ['locked', 'destroying'],
    // A drain's export leaves from `moving` itself (no target to commit).
    moving: ['locked', 'committing', 'destroying'],
    committing: ['destroying', 'locked'],
  };
  for (const from of SPACE_STATES) {
    for (const to of SPACE_STATES)
      assert.equal(canTransition(from, to), allowed[from].includes(to), `${from} -> ${to}`);
  }
});

test('renew moves the lease; torn-down spaces and bad leases are refused', () => {
  const { repo } = setup();
  const s = repo.insert(newSpace());
  repo.setState(s.id, ['creating'], 'active');
  const r = repo.renew(s.id, 50_000, 60_000);
  assert.equal(r.leaseExpiresAt, 50_000);
  assert.equal(r.graceUntil, 60_000);
  assert.throws(() => repo.renew(s.id, 60_000, 50_000), isCode('invalid_request'));
  assert.throws(() => repo.renew('sp_bbbbbbbbbbbbbbbbbbbb', 1, 2), isCode('not_found'));
  repo.setState(s.id, ['active'], 'destroying');
  assert.throws(() => repo.renew(s.id, 70_000, 80_000), isCode('conflict', 'destroying'));
  assert.equal(repo.get(s.id)?.leaseExpiresAt, 50_000);
});

test('due: expired leases of active/locked spaces, and everything not destroyed past grace', () => {
  const { repo } = setup();
  const mk = (state: SpaceState, lease: number, grace: number) => {
    const s = repo.insert(newSpace({ state, leaseExpiresAt: lease, graceUntil: grace }));
    return s.id;
  };
  const activeExpired = mk('active', 100, 200);
  const lockedExpired = mk('locked', 150, 900);
  mk('active', 1000, 2000); // not yet
  const expiredPastGrace = mk('expired', 100, 190);
  const failedPastGrace = mk('failed', 100, 150);
  const destroyingPastGrace = mk('destroying', 100, 150);
  const destroyed = mk('destroying', 100, 150);
  repo.markDestroyed(destroyed);

  const due = repo.due({ now: 200 });
  assert.deepEqual(due.expired.map((r) => r.id).sort(), [activeExpired, lockedExpired].sort());
  assert.deepEqual(
    due.pastGrace.map((r) => r.id).sort(),
    [activeExpired, expiredPastGrace, failedPastGrace, destroyingPastGrace].sort(),
  );
  assert.deepEqual(repo.due({ now: 99 }), { expired: [], pastGrace: [] });
});

test('markDestroyed is idempotent and refuses a space still live on the host', () => {
  const { repo } = setup();
  const s = repo.insert(newSpace({ state: 'active' }));
  assert.throws(() => repo.markDestroyed(s.id), isCode('conflict', 'active'));
  repo.setState(s.id, ['active'], 'destroying');
  const a = repo.markDestroyed(s.id);
  const b = repo.markDestroyed(s.id);
  assert.equal(a.state, 'destroyed');
  assert.deepEqual(a, b);
  assert.throws(() => repo.markDestroyed('sp_bbbbbbbbbbbbbbbbbbbb'), isCode('not_found'));
});

test('countByState lists every state', () => {
  const { repo } = setup();
  repo.insert(newSpace());
  repo.insert(newSpace({ state: 'active' }));
  repo.insert(newSpace({ state: 'active' }));
  assert.deepEqual(repo.countByState(), {
    creating: 1,
    active: 2,
    locked: 0,
    expired: 0,
    destroying: 0,
    destroyed: 0,
    failed: 0,
    importing: 0,
    prepared: 0,
    moving: 0,
    committing: 0,
    locking: 0,
  });
});

test('the spaces table has no column for a key that opens storage', () => {
  const { db } = setup();
  const cols = (db.prepare('PRAGMA table_info(spaces)').all() as { name: string }[]).map((c) => c.name);
  assert.deepEqual(
    cols.filter((c) => /key|secret|wrapped|sealed/.test(c)),
    ['owner_key'],
  );
});

test('a space keeps the subordinate ids and subnet recorded at first use; another space cannot take them', () => {
  const { repo } = setup();
  const a = repo.insert(newSpace());
  const b = repo.insert(newSpace());
  const ids = (base: number, subnet: string) => ({ idMap: { base, size: 65536 }, subnet });
  assert.equal(repo.get(a.id)!.subidBase, null);
  assert.deepEqual(repo.workloadIds(a.id, ids(1_000_000_000, '10.128.0.0/26')), ids(1_000_000_000, '10.128.0.0/26'));
  // The node's configuration changed: what a was given stays.
  assert.deepEqual(repo.workloadIds(a.id, ids(2_000_000_000, '10.200.0.0/26')), ids(1_000_000_000, '10.128.0.0/26'));
  assert.equal(repo.get(a.id)!.subidBase, 1_000_000_000);
  // A range overlapping a's, or its subnet, is never handed to b.
  assert.throws(() => repo.workloadIds(b.id, ids(1_000_000_000 + 100, '10.128.0.64/26')), isCode('capacity_exceeded'));
  assert.throws(() => repo.workloadIds(b.id, ids(1_000_065_536, '10.128.0.0/26')), isCode('capacity_exceeded'));
  assert.deepEqual(repo.workloadIds(b.id, ids(1_000_065_536, '10.128.0.64/26')), ids(1_000_065_536, '10.128.0.64/26'));
  assert.throws(() => repo.workloadIds('sp_nonexistent', ids(1, 'x')), isCode('not_found'));
});
