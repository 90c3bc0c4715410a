import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcsError, type CreateSpaceResponse } from '@ocs/protocol';
import { ManualClock } from '@ocs/node-daemon/testing';
import { migrate, openDatabase } from '#src/state/index.js';
import { IDEMPOTENCY_TTL_MS, MAX_IN_MEMORY_PER_PRINCIPAL, ReservationKeys } from '#src/spaces/reservation-keys.js';

const KEY = 'k-0123456789abcdef';
const body = (n: number) => new TextEncoder().encode(JSON.stringify({ leaseSeconds: n }));

function setup(t: { after: (fn: () => void) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-idem-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'node.db');
  const clock = new ManualClock(Date.UTC(2026, 11, 2));
  const live = new Set<string>();
  const open = () => {
    const db = openDatabase(path);
    migrate(db);
    t.after(() => db.close());
    return new ReservationKeys(db, clock, (id) => live.has(id));
  };
  let made = 0;
  /** A reservation as the service makes one: an id first, the response later. */
  const create = (reserved: (id: string) => void) => {
    const id = `sp_${String(++made).padStart(20, '0')}`;
    reserved(id);
    live.add(id);
    return new Promise<CreateSpaceResponse>((r) =>
      setTimeout(() => r({ space: { id } as CreateSpaceResponse['space'], wrappedKey: `wrapped-${id}` }), 5),
    );
  };
  return { open, clock, live, create, made: () => made };
}

const conflict = (err: unknown) => err instanceof OcsError && err.code === 'conflict';

test('a retried reservation gets the first response, also while the first is still running', async (t) => {
  const s = setup(t);
  const keys = s.open();
  const [a, b] = await Promise.all([keys.once('p', KEY, body(60), s.create), keys.once('p', KEY, body(60), s.create)]);
  const c = await keys.once('p', KEY, body(60), s.create);
  assert.equal(s.made(), 1);
  assert.deepEqual([a.replayed, b.replayed, c.replayed], [false, true, true]);
  assert.equal(b.response.wrappedKey, a.response.wrappedKey);
  assert.equal(c.response.space.id, a.response.space.id);
  // Keys belong to their principal: another one's same key is another reservation.
  await keys.once('q', KEY, body(60), s.create);
  assert.equal(s.made(), 2);
});

test('the same key with another request is a conflict, and makes nothing', async (t) => {
  const s = setup(t);
  const keys = s.open();
  await keys.once('p', KEY, body(60), s.create);
  await assert.rejects(keys.once('p', KEY, body(61), s.create), conflict);
  assert.equal(s.made(), 1);
});

test('a failed reservation frees its key', async (t) => {
  const s = setup(t);
  const keys = s.open();
  await assert.rejects(
    keys.once('p', KEY, body(60), async (reserved) => {
      reserved('sp_failedfailedfailedfa');
      throw new OcsError('capacity_exceeded', 'full');
    }),
    (e: unknown) => e instanceof OcsError && e.code === 'capacity_exceeded',
  );
  const r = await keys.once('p', KEY, body(60), s.create);
  assert.equal(r.replayed, false);
  assert.equal(s.made(), 1);
});

test('after a restart a retry never makes a second space: conflict naming the first; a gone one frees the key', async (t) => {
  const s = setup(t);
  const first = await s.open().once('p', KEY, body(60), s.create);
  const restarted = s.open();
  await assert.rejects(
    restarted.once('p', KEY, body(60), s.create),
    (e: unknown) => conflict(e) && (e as OcsError).details?.spaceId === first.response.space.id,
  );
  assert.equal(s.made(), 1);
  s.live.delete(first.response.space.id);
  assert.equal((await restarted.once('p', KEY, body(60), s.create)).replayed, false);
  assert.equal(s.made(), 2);
});

test('a key is kept for a day', async (t) => {
  const s = setup(t);
  const keys = s.open();
  await keys.once('p', KEY, body(60), s.create);
  s.clock.advance(IDEMPOTENCY_TTL_MS - 1000);
  assert.equal((await keys.once('p', KEY, body(60), s.create)).replayed, true);
  s.clock.advance(2000);
  assert.equal((await keys.once('p', KEY, body(60), s.create)).replayed, false);
  assert.equal(s.made(), 2);
});

test("one principal reserving a lot evicts only its own oldest answers, never another's", async (t) => {
  const s = setup(t);
  const keys = s.open();
  const victim = await keys.once('victim', KEY, body(60), s.create);
  const flood = (n: number) => keys.once('flooder', `k-flood-${String(n).padStart(8, '0')}`, body(60), s.create);
  // Started in order (each is held before its first await), finished together.
  await Promise.all(Array.from({ length: MAX_IN_MEMORY_PER_PRINCIPAL + 1 }, (_, n) => flood(n)));
  // The victim's retry is still answered with its first response (the wrapped key included).
  const retry = await keys.once('victim', KEY, body(60), s.create);
  assert.equal(retry.replayed, true);
  assert.equal(retry.response.wrappedKey, victim.response.wrappedKey);
  // The flooder's oldest answer went: its retry is refused (its space is live), not a second space.
  await assert.rejects(flood(0), conflict);
  assert.equal((await flood(MAX_IN_MEMORY_PER_PRINCIPAL)).replayed, true, 'its newest is kept');
});
