import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { KeyedLock } from './keyed-lock.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('one task per key at a time, in the order asked; other keys run alongside', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  const task = (name: string, ms: number) => async () => {
    log.push(`${name}+`);
    await sleep(ms);
    log.push(`${name}-`);
    return name;
  };
  const done = await Promise.all([
    lock.run('a', task('a1', 20)),
    lock.run('a', task('a2', 1)),
    lock.run('b', task('b1', 5)),
    lock.run('a', task('a3', 1)),
  ]);
  assert.deepEqual(done, ['a1', 'a2', 'b1', 'a3']);
  const a = log.filter((l) => l.startsWith('a'));
  assert.deepEqual(a, ['a1+', 'a1-', 'a2+', 'a2-', 'a3+', 'a3-'], 'same key: serial, first come first served');
  assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'other key: concurrent');
});

test('a failure goes to its caller only; the next task runs; a throw before the first await is a rejection', async () => {
  const lock = new KeyedLock();
  const ran: string[] = [];
  const results = await Promise.allSettled([
    lock.run('k', async () => {
      await tick();
      throw new Error('first');
    }),
    lock.run('k', () => {
      throw new Error('sync');
    }),
    lock.run('k', async () => {
      ran.push('third');
      return 3;
    }),
  ]);
  assert.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
    ['first', 'sync', 3],
  );
  assert.deepEqual(ran, ['third']);
});

test('a key with nothing running or queued is forgotten', async () => {
  const lock = new KeyedLock();
  let release!: () => void;
  const held = lock.run('a', () => new Promise<void>((r) => (release = r)));
  const next = lock.run('a', async () => 'next');
  const other = lock.run('b', () => Promise.reject(new Error('no')));
  assert.equal(lock.size, 2);
  await assert.rejects(other);
  await tick();
  assert.equal(lock.size, 1, 'b is idle');
  release();
  await held;
  assert.equal(await next, 'next');
  await tick();
  assert.equal(lock.size, 0);
  for (let i = 0; i < 1000; i++) void lock.run(`k${i}`, async () => i);
  await tick();
  assert.equal(lock.size, 0, 'many keys leave nothing behind');
});

test('a long queue on one key runs whole and in order', async () => {
  const lock = new KeyedLock();
  const order: number[] = [];
  await Promise.all(Array.from({ length: 5000 }, (_, i) => lock.run('k', async () => void order.push(i))));
  assert.deepEqual(
    order,
    Array.from({ length: 5000 }, (_, i) => i),
  );
  await tick();
  assert.equal(lock.size, 0);
});
