import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Revert } from './revert.js';

test('undos run newest first, each once, and not at all when the work succeeds', async () => {
  const log: string[] = [];
  const work = async (fail: boolean) => {
    const undo = new Revert();
    try {
      undo.push('a', () => log.push('undo a'));
      undo.push('b', async () => {
        await new Promise((r) => setTimeout(r, 1));
        log.push('undo b');
      });
      undo.push('c', () => log.push('undo c'));
      if (fail) throw new Error('step failed');
      return 'ok';
    } catch (err) {
      await undo.run();
      assert.deepEqual(await undo.run(), [], 'a second run has nothing left');
      throw err;
    }
  };
  assert.equal(await work(false), 'ok');
  assert.deepEqual(log, []);
  await assert.rejects(work(true), /step failed/);
  assert.deepEqual(log, ['undo c', 'undo b', 'undo a']);
});

test("a failing undo is reported, the rest still run, and the caller's error is the one thrown", async () => {
  const log: string[] = [];
  const reported: [string, unknown][] = [];
  const original = new Error('original');
  const undoErr = new Error('undo broke');
  const undo = new Revert((err, step) => reported.push([step, err]));
  undo.push('first', () => log.push('first'));
  undo.push('sync throw', () => {
    throw undoErr;
  });
  undo.push('rejects', () => Promise.reject(new Error('rejected')));
  undo.push('last', () => log.push('last'));
  const run = async () => {
    try {
      throw original;
    } catch (err) {
      const failed = await undo.run();
      assert.deepEqual(
        failed.map((f) => f.step),
        ['rejects', 'sync throw'],
      );
      throw err;
    }
  };
  await assert.rejects(run(), (err) => err === original);
  assert.deepEqual(log, ['last', 'first']);
  assert.deepEqual(
    reported.map(([step]) => step),
    ['rejects', 'sync throw'],
  );
  assert.equal(reported[1]?.[1], undoErr);
});

test('without a callback, or with one that throws, failing undos neither throw nor stop the others', async () => {
  for (const onError of [
    undefined,
    () => {
      throw new Error('logger broke');
    },
  ]) {
    const log: string[] = [];
    const undo = new Revert(onError);
    undo.push('a', () => log.push('a'));
    undo.push('b', () => Promise.reject(new Error('b')));
    assert.equal((await undo.run()).length, 1);
    assert.deepEqual(log, ['a']);
  }
});
