import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { OcsError } from '@ocs/protocol';
import type { Resources } from '@ocs/protocol';
import { openDatabase } from './db.js';
import type { Database } from './db.js';
import { Ledger } from './ledger.js';
import { SpacesRepo } from './spaces-repo.js';
import type { NewSpace } from './spaces-repo.js';

const MiB = 1024 * 1024;
let n = 0;
function space(over: Partial<NewSpace> = {}): NewSpace {
  n++;
  return {
    id: `sp_${String(n).padStart(20, 'a')}`,
    org: 'acme',
    ownerKey: 'A'.repeat(43),
    ownerFingerprint: 'SHA256:abc',
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
    storageBytes: 0,
    leaseExpiresAt: 10_000,
    graceUntil: 20_000,
    ...over,
  };
}

function setup(allocatable: Resources, db: Database = openDatabase(':memory:')) {
  const repo = new SpacesRepo(db, { uidBase: 300_000, uidCount: 1000 });
  return { db, repo, ledger: new Ledger(db, { allocatable }) };
}

const BIG: Resources = { cpuMillicores: 4000, memoryBytes: 1024 * MiB, storageBytes: 100 * MiB * 1024 };

function refusedFor(resource: string, requested?: number, available?: number) {
  return (e: unknown) =>
    e instanceof OcsError &&
    e.code === 'capacity_exceeded' &&
    e.details?.resource === resource &&
    (requested === undefined || e.details.requested === requested) &&
    (available === undefined || e.details.available === available);
}

test('reserve inserts the space with a uid and counts it', () => {
  const { ledger, repo } = setup(BIG);
  const row = ledger.reserve(space({ cpuMillicores: 1500, memoryBytes: 256 * MiB, storageBytes: 10 * MiB }));
  assert.equal(repo.get(row.id)?.uid, 300_000);
  assert.deepEqual(ledger.used(), { cpuMillicores: 1500, memoryBytes: 256 * MiB, storageBytes: 10 * MiB });
  assert.deepEqual(ledger.available(), {
    cpuMillicores: 2500,
    memoryBytes: 768 * MiB,
    storageBytes: BIG.storageBytes - 10 * MiB,
  });
});

test('each dimension refuses on its own, with what was asked and what is left', () => {
  const allocatable: Resources = { cpuMillicores: 1000, memoryBytes: 64 * MiB, storageBytes: 10 * MiB, pids: 100 };
  const fits = { cpuMillicores: 500, memoryBytes: 32 * MiB, storageBytes: 5 * MiB, pids: 50 };
  const cases: [keyof typeof fits, number][] = [
    ['cpuMillicores', 501],
    ['memoryBytes', 32 * MiB + 1],
    ['storageBytes', 5 * MiB + 1],
    ['pids', 51],
  ];
  for (const [dim, tooMuch] of cases) {
    const { ledger, repo } = setup(allocatable);
    ledger.reserve(space(fits)); // half of everything is taken
    assert.throws(() => ledger.reserve(space({ ...fits, [dim]: tooMuch })), refusedFor(dim, tooMuch, fits[dim]), dim);
    assert.equal(repo.list().length, 1, `${dim}: nothing inserted`);
    // Exactly what is left fits.
    ledger.reserve(space(fits));
    assert.deepEqual(ledger.available(), { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0, pids: 0 });
  }
});

test('a destroyed space frees its capacity', () => {
  const { ledger, repo } = setup({ cpuMillicores: 1000, memoryBytes: BIG.memoryBytes, storageBytes: 0 });
  const a = ledger.reserve(space({ cpuMillicores: 600 }));
  assert.throws(() => ledger.reserve(space({ cpuMillicores: 600 })), refusedFor('cpuMillicores', 600, 400));
  repo.setState(a.id, ['creating'], 'active');
  assert.throws(
    () => ledger.release(a.id),
    (e) => e instanceof OcsError && e.code === 'conflict',
    'a live space keeps its capacity',
  );
  repo.setState(a.id, ['active'], 'destroying');
  assert.equal(ledger.used().cpuMillicores, 600, 'destroying still holds capacity');
  repo.setState(a.id, ['destroying'], 'destroyed');
  assert.equal(ledger.used().cpuMillicores, 0, 'destroyed frees it even before release()');
  ledger.release(a.id);
  ledger.release(a.id); // idempotent
  ledger.reserve(space({ cpuMillicores: 1000 }));
});

test('a failed create frees its capacity once released', () => {
  const { ledger, repo } = setup({ cpuMillicores: 1000, memoryBytes: BIG.memoryBytes, storageBytes: 0 });
  const a = ledger.reserve(space({ cpuMillicores: 1000 }));
  repo.setState(a.id, ['creating'], 'failed');
  assert.equal(ledger.used().cpuMillicores, 1000, 'failed alone may still hold host objects');
  ledger.release(a.id);
  assert.equal(ledger.used().cpuMillicores, 0);
  assert.notEqual(repo.get(a.id)?.releasedAt, null);
  ledger.reserve(space({ cpuMillicores: 1000 }));
  assert.throws(
    () => ledger.release('sp_bbbbbbbbbbbbbbbbbbbb'),
    (e) => e instanceof OcsError && e.code === 'not_found',
  );
});

test('pids: counted only when the node limits them, and then required', () => {
  const noPids = setup(BIG);
  noPids.ledger.reserve(space({ pids: 1_000_000 }));
  assert.equal(noPids.ledger.used().pids, undefined);

  const withPids = setup({ ...BIG, pids: 1000 });
  assert.throws(
    () => withPids.ledger.reserve(space({ pids: null })),
    (e) => e instanceof OcsError && e.code === 'invalid_request' && e.details?.field === '/resources/pids',
  );
  withPids.ledger.reserve(space({ pids: 400 }));
  assert.equal(withPids.ledger.used().pids, 400);
  assert.equal(withPids.ledger.available().pids, 600);
});

test('malformed requests are invalid, not a capacity question', () => {
  const { ledger } = setup(BIG);
  assert.throws(
    () => ledger.reserve(space({ cpuMillicores: 1.5 })),
    (e) => e instanceof OcsError && e.code === 'invalid_request',
  );
  assert.throws(
    () => ledger.reserve(space({ memoryBytes: -1 })),
    (e) => e instanceof OcsError && e.code === 'invalid_request',
  );
});

test('available() is never negative when the allocatable shrinks under existing spaces', () => {
  const db = openDatabase(':memory:');
  setup({ cpuMillicores: 2000, memoryBytes: BIG.memoryBytes, storageBytes: 0 }, db).ledger.reserve(
    space({ cpuMillicores: 1500 }),
  );
  const smaller = new Ledger(db, {
    allocatable: { cpuMillicores: 1000, memoryBytes: BIG.memoryBytes, storageBytes: 0 },
  });
  assert.equal(smaller.available().cpuMillicores, 0);
  assert.throws(() => smaller.reserve(space({ cpuMillicores: 10 })), refusedFor('cpuMillicores', 10, 0));
});

// --- Real concurrency: many connections on one file, racing for the last capacity. ---

const ALLOC: Resources = { cpuMillicores: 10_000, memoryBytes: 37 * 16 * MiB, storageBytes: 10 * 1024 * MiB };
// 33 fit by cpu (33 * 300 = 9900) before memory (37) or storage (40) runs out.
const EACH = { cpuMillicores: 300, memoryBytes: 16 * MiB, storageBytes: 256 * MiB };
const FIT = 33;

const mod = (f: string) => new URL(f, import.meta.url).href;

/** Body shared by child processes and worker threads: reserve `count` spaces, report outcomes. */
function raceBody(path: string, tag: string, count: number): string {
  return `
    const { openDatabase } = await import(${JSON.stringify(mod('./db.js'))});
    const { SpacesRepo } = await import(${JSON.stringify(mod('./spaces-repo.js'))});
    const { Ledger } = await import(${JSON.stringify(mod('./ledger.js'))});
    const db = openDatabase(${JSON.stringify(path)}, { busyTimeoutMs: 60000 });
    new SpacesRepo(db, { uidBase: 300000, uidCount: 1000 });
    const ledger = new Ledger(db, { allocatable: ${JSON.stringify(ALLOC)} });
    await ready();
    const out = [];
    for (let i = 0; i < ${count}; i++) {
      const id = ('sp_' + ${JSON.stringify(tag)} + 'x' + i).padEnd(23, 'a');
      try {
        ledger.reserve({ id, org: 'acme', ownerKey: 'A'.repeat(43), ownerFingerprint: 'f', ...${JSON.stringify(EACH)},
          leaseExpiresAt: 1, graceUntil: 2 });
        out.push('ok');
      } catch (e) { out.push(e.code ?? String(e)); }
    }
    db.close();
    done(out);`;
}

async function watchUsed(
  path: string,
  race: () => Promise<string[]>,
): Promise<{ outcomes: string[]; maxCpu: number; samples: number }> {
  const db = openDatabase(path);
  const ledger = new Ledger(db, { allocatable: ALLOC });
  let maxCpu = 0;
  let samples = 0;
  const timer = setInterval(() => {
    maxCpu = Math.max(maxCpu, ledger.used().cpuMillicores);
    samples++;
  }, 1);
  try {
    return { outcomes: await race(), maxCpu, samples };
  } finally {
    clearInterval(timer);
    db.close();
  }
}

function checkRace(path: string, outcomes: string[]): void {
  assert.equal(outcomes.length, 100);
  assert.equal(outcomes.filter((o) => o === 'ok').length, FIT, 'exactly as many succeed as fit');
  assert.deepEqual(
    [...new Set(outcomes.filter((o) => o !== 'ok'))],
    ['capacity_exceeded'],
    'the rest are refused for capacity',
  );
  const db = openDatabase(path);
  try {
    const ledger = new Ledger(db, { allocatable: ALLOC });
    const used = ledger.used();
    assert.equal(used.cpuMillicores, FIT * EACH.cpuMillicores);
    assert.ok(used.memoryBytes <= ALLOC.memoryBytes && used.storageBytes <= ALLOC.storageBytes);
    const uids = db.prepare('SELECT uid FROM spaces').pluck().all() as number[];
    assert.equal(new Set(uids).size, FIT, 'every space got its own uid');
  } finally {
    db.close();
  }
}

function tempDb(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-ledger-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'node.db');
  openDatabase(path).close();
  return path;
}

test('100 reservations from 5 processes racing for the last capacity: exactly the ones that fit win', async (t) => {
  const path = tempDb(t);
  const { outcomes, maxCpu, samples } = await watchUsed(path, async () => {
    const children = [0, 1, 2, 3, 4].map((p) => {
      const code = `
        const ready = () => new Promise((r) => { process.stdout.write('ready\\n'); process.stdin.once('data', r); });
        const done = (out) => process.stdout.write(JSON.stringify(out) + '\\n');
        ${raceBody(path, `p${p}`, 20)}`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      let text = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (text += s));
      const isReady = new Promise<void>((resolve) => {
        const check = () => (text.includes('ready') ? resolve() : child.stdout.once('data', check));
        check();
      });
      return { child, isReady, result: once(child, 'exit').then(() => text) };
    });
    await Promise.all(children.map((c) => c.isReady));
    for (const c of children) c.child.stdin.end('go\n'); // start them as close together as we can
    const texts = await Promise.all(children.map((c) => c.result));
    return texts.flatMap((s) => JSON.parse(s.trim().split('\n').at(-1) ?? '[]') as string[]);
  });
  checkRace(path, outcomes);
  assert.ok(maxCpu <= ALLOC.cpuMillicores, 'the sum never exceeded the allocatable');
  assert.ok(samples > 0);
});

test('100 reservations from 4 worker threads (one connection each) racing: exactly the ones that fit win', async (t) => {
  const path = tempDb(t);
  const gate = new Int32Array(new SharedArrayBuffer(4));
  const { outcomes, maxCpu } = await watchUsed(path, async () => {
    const workers = [0, 1, 2, 3].map((w) => {
      const code = `
        const { parentPort, workerData } = require('node:worker_threads');
        const ready = async () => { parentPort.postMessage('ready'); Atomics.wait(workerData.gate, 0, 0); };
        const done = (out) => parentPort.postMessage(out);
        (async () => { ${raceBody(path, `w${w}`, 25)} })().catch((e) => parentPort.postMessage(String(e)));`;
      const worker = new Worker(code, { eval: true, workerData: { gate } });
      const isReady = once(worker, 'message');
      const result = new Promise<string[]>((resolve, reject) => {
        worker.on('message', (m: unknown) => {
          if (Array.isArray(m)) resolve(m as string[]);
          else if (m !== 'ready') reject(new Error(String(m)));
        });
        worker.on('error', reject);
      });
      return { worker, isReady, result };
    });
    await Promise.all(workers.map((w) => w.isReady));
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    const all = await Promise.all(workers.map((w) => w.result));
    await Promise.all(workers.map((w) => w.worker.terminate()));
    return all.flat();
  });
  checkRace(path, outcomes);
  assert.ok(maxCpu <= ALLOC.cpuMillicores, 'the sum never exceeded the allocatable');
});
