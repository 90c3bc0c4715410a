import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { SPACE_A, SPACE_B, twoSpaces } from '@ocs/node-daemon/testing';
import { WorkloadsRepo } from '#src/state/workloads-repo.js';
import { ManualClock } from '@ocs/node-daemon/testing';

const MiB = 1024 * 1024;
const SPACE = SPACE_A;
const OTHER = SPACE_B;

function setup(path = ':memory:') {
  const { db, spaces } = twoSpaces(path);
  return { db, spaces, repo: new WorkloadsRepo(db) };
}

const budget = { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB, pids: 100 };
let n = 0;
const ctr = (
  over: Partial<{ cpuMillicores: number; memoryBytes: number; pids: number; name: string; spaceId: string }> = {},
) => {
  n++;
  return {
    id: `ctr_${String(n).padStart(20, 'a')}`,
    spaceId: SPACE,
    kind: 'container' as const,
    name: `c${n}`,
    spec: { image: 'x' },
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
    storageBytes: 0,
    pids: 10,
    ...over,
  };
};

test('a workload that fits is recorded creating, then ready; names are unique per space and kind', () => {
  const { repo } = setup();
  const w = repo.reserve(budget, ctr({ name: 'web' }));
  assert.equal(w.state, 'creating');
  repo.markReady(w.id, { image: 'x', path: '/p' });
  assert.equal(repo.get(SPACE, 'container', 'web').state, 'ready');
  assert.deepEqual(repo.get(SPACE, 'container', w.id).spec, { image: 'x', path: '/p' }, 'found by id too');
  assert.throws(() => repo.reserve(budget, ctr({ name: 'web' })), { code: 'conflict' });
  // The same name in another space, or as another kind, is fine.
  repo.reserve(budget, ctr({ name: 'web', spaceId: OTHER }));
  assert.throws(() => repo.get(OTHER, 'container', w.id), { code: 'not_found' }, "another space's id is not found");
  assert.deepEqual(repo.used(SPACE), { cpuMillicores: 100, memoryBytes: 16 * MiB, storageBytes: 0, pids: 10 });
  assert.deepEqual(repo.counts(SPACE), { volume: 0, container: 1, vm: 0 });
  repo.remove(w.id);
  assert.deepEqual(repo.counts(SPACE), { volume: 0, container: 0, vm: 0 });
});

test('each dimension is checked: the first that does not fit is named, and nothing is recorded', () => {
  const { repo } = setup();
  repo.reserve(budget, ctr({ cpuMillicores: 900, memoryBytes: 200 * MiB, pids: 90 }));
  for (const [over, resource] of [
    [{ cpuMillicores: 101 }, 'cpuMillicores'],
    [{ cpuMillicores: 1, memoryBytes: 57 * MiB }, 'memoryBytes'],
    [{ cpuMillicores: 1, memoryBytes: MiB, pids: 11 }, 'pids'],
  ] as const) {
    assert.throws(
      () => repo.reserve(budget, ctr(over)),
      (e: { code?: string; details?: { resource?: string } }) =>
        e.code === 'budget_exceeded' && e.details?.resource === resource,
    );
  }
  assert.equal(repo.list(SPACE).length, 1);
  // Exactly what is left fits.
  repo.reserve(budget, ctr({ cpuMillicores: 100, memoryBytes: 56 * MiB, pids: 10 }));
  // A space without a pids limit does not count them.
  repo.reserve({ ...budget, cpuMillicores: 10_000, memoryBytes: 10_000 * MiB, pids: undefined }, ctr({ pids: 1000 }));
});

test('many connections racing for the last of a space never exceed its budget', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-wl-race-'));
  const path = join(dir, 'node.db');
  try {
    setup(path).db.close();
    const gate = new Int32Array(new SharedArrayBuffer(4));
    const url = import.meta.resolve('#src/state/workloads-repo.js');
    const dbUrl = import.meta.resolve('#src/state/db.js');
    const workers = [0, 1, 2, 3].map((w) => {
      const code = `
        const { workerData, parentPort } = require('node:worker_threads');
        (async () => {
          const { openDatabase } = await import(${JSON.stringify(dbUrl)});
          const { WorkloadsRepo } = await import(${JSON.stringify(url)});
          const repo = new WorkloadsRepo(openDatabase(${JSON.stringify(path)}));
          Atomics.wait(workerData.gate, 0, 0);
          let ok = 0, refused = 0;
          for (let i = 0; i < 25; i++) {
            try {
              repo.reserve({ cpuMillicores: 1000, memoryBytes: 1 << 30, storageBytes: 0 },
                { id: 'ctr_' + ('w${w}x' + i).padStart(20, 'a'), spaceId: '${SPACE}', kind: 'container', name: 'w${w}-' + i,
                  spec: {}, cpuMillicores: 30, memoryBytes: 1, storageBytes: 0, pids: 0 });
              ok++;
            } catch (e) { if (e.code === 'budget_exceeded') refused++; else throw e; }
          }
          parentPort.postMessage({ ok, refused });
        })().catch((e) => parentPort.postMessage(String(e)));`;
      return new Worker(code, { eval: true, workerData: { gate } });
    });
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    const results = (await Promise.all(workers.map((w) => once(w, 'message')))).map(
      ([m]) => m as { ok: number; refused: number },
    );
    for (const r of results) assert.equal(typeof r, 'object', String(r));
    const granted = results.reduce((s, r) => s + r.ok, 0);
    assert.equal(granted, Math.floor(1000 / 30), 'exactly what fits was granted');
    const { repo, db } = setup(path);
    assert.equal(repo.used(SPACE).cpuMillicores, granted * 30);
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a workload marked as being removed keeps its share until it is removed; the first mark holds', () => {
  const clock = new ManualClock(1_000);
  const { db } = twoSpaces();
  const repo = new WorkloadsRepo(db, { clock });
  const budget = { cpuMillicores: 1000, memoryBytes: 64 * MiB, storageBytes: 64 * MiB };
  const w = repo.reserve(budget, {
    id: `ctr_${'r'.repeat(20)}`,
    spaceId: SPACE_A,
    kind: 'container',
    name: 'r',
    spec: {},
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
    storageBytes: 0,
    pids: 1,
  });
  repo.markReady(w.id);
  assert.equal(repo.get(SPACE_A, 'container', 'r').removingSince, null);
  repo.markRemoving(w.id);
  clock.advance(5_000);
  repo.markRemoving(w.id); // a retried delete
  assert.equal(repo.get(SPACE_A, 'container', 'r').removingSince, 1_000);
  assert.equal(repo.used(SPACE_A).cpuMillicores, 100, 'still counted');
  repo.remove(w.id);
  assert.equal(repo.used(SPACE_A).cpuMillicores, 0);
});
