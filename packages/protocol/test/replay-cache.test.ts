import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryNonceStore, TableNonceStore, type NonceTable } from '@ocs/protocol';

/** A NonceTable over a Map, shaped like the SQL tables of the daemon and the space process. */
function mapTable(): NonceTable & { rows: Map<string, { partition: string; expiresAt: number }> } {
  const rows = new Map<string, { partition: string; expiresAt: number }>();
  return {
    rows,
    insert: (key, partition, expiresAt) => (rows.has(key) ? 0 : (rows.set(key, { partition, expiresAt }), 1)),
    sweep: (now) => {
      const removed = new Map<string, number>();
      for (const [k, r] of rows) {
        if (r.expiresAt >= now) continue;
        rows.delete(k);
        removed.set(r.partition, (removed.get(r.partition) ?? 0) + 1);
      }
      return removed;
    },
    countByPartition: () => {
      const held = new Map<string, number>();
      for (const r of rows.values()) held.set(r.partition, (held.get(r.partition) ?? 0) + 1);
      return held;
    },
  };
}

test('TableNonceStore: a nonce is accepted once, swept after it expires, and the store fails closed when full', () => {
  const table = mapTable();
  const store = new TableNonceStore(table, { maxEntries: 3, maxPerPartition: 3 });
  assert.equal(store.remember('k', 'n1', 100, 50), true);
  assert.equal(store.remember('k', 'n1', 100, 51), false, 'replayed');
  assert.equal(store.remember('other-key', 'n1', 100, 51), true, 'nonces are per key');
  assert.equal(store.remember('k', 'n2', 100, 52), true);
  assert.throws(() => store.remember('k2', 'n3', 100, 53), { code: 'unavailable' }, 'full: refuse, never evict');
  // Once the first entries expire, a sweep makes room.
  assert.equal(store.remember('k', 'n3', 200, 101), true);
  assert.equal(table.rows.size, 1);
  // A fresh store over the same table (a restart) still refuses what was seen, and knows who holds what.
  const restarted = new TableNonceStore(table, { maxEntries: 3, maxPerPartition: 3 });
  assert.equal(restarted.remember('k', 'n3', 200, 102), false);
  assert.equal(restarted.heldBy('k'), 1);
});

test('replay cache shares: a partition over its share gets rate_limited, the others keep theirs', () => {
  const table = mapTable();
  const store = new TableNonceStore(table, { maxEntries: 100, maxPerPartition: 5 });
  // Throwaway keys all charged to one principal: new keys do not buy new shares.
  for (let i = 0; i < 5; i++)
    assert.equal(store.remember(`throwaway-${i}`, 'nonce-1', 1000, 10, 'principal:mallory'), true);
  assert.throws(() => store.remember('throwaway-5', 'nonce-1', 1000, 10, 'principal:mallory'), {
    code: 'rate_limited',
  });
  assert.equal(store.heldBy('principal:mallory'), 5, 'the refused nonce was not stored');
  // Everyone else is unaffected, by key or by principal.
  assert.equal(store.remember('SHA256:owner', 'nonce-1', 1000, 10), true);
  assert.equal(store.remember('throwaway-6', 'nonce-1', 1000, 10, 'principal:alice'), true);
  // A replay is still a replay, charged or not.
  assert.equal(store.remember('SHA256:owner', 'nonce-1', 1000, 11), false);
  // The share comes back as the partition's signatures expire.
  assert.equal(store.remember('throwaway-7', 'nonce-1', 2000, 1001, 'principal:mallory'), true);
  assert.equal(store.heldBy('principal:mallory'), 1);
  assert.equal(store.size, 1, 'the owner and alice expired too');
});

test('replay cache shares: a partition at its share sweeps at most once a second', () => {
  const table = mapTable();
  let sweeps = 0;
  const counting: NonceTable = { ...table, sweep: (now) => (sweeps++, table.sweep(now)) };
  const store = new TableNonceStore(counting, { maxEntries: 100, maxPerPartition: 2 });
  store.remember('a', 'n1', 1000, 10);
  store.remember('a', 'n2', 1000, 10);
  const before = sweeps;
  for (let i = 0; i < 1000; i++) assert.throws(() => store.remember('a', `x${i}`, 1000, 10), { code: 'rate_limited' });
  assert.ok(sweeps - before <= 1, `${sweeps - before} sweeps`);
});

test('MemoryNonceStore has the same shares and the same fail-closed bound', () => {
  const store = new MemoryNonceStore({ maxEntries: 4, maxPerPartition: 2 });
  assert.equal(store.remember('a', 'n1', 100, 1), true);
  assert.equal(store.remember('a', 'n2', 100, 1), true);
  assert.throws(() => store.remember('a', 'n3', 100, 1), { code: 'rate_limited' });
  assert.equal(store.remember('b', 'n1', 100, 1), true);
  assert.equal(store.remember('c', 'n1', 100, 1), true);
  assert.throws(() => store.remember('d', 'n1', 100, 1), { code: 'unavailable' });
  assert.equal(store.size, 4);
});
