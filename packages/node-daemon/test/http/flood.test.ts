/**
 * Item: floods. 100,000 refused requests against the daemon's app in this process (bounded
 * loops, nothing outside 127.0.0.1): unauthenticated ones leave no audit entry, one principal's
 * refusals are chained up to its budget and summarized beyond it, throwaway keys cannot take
 * more than one principal's share of the replay cache, and the owner is answered throughout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DROPPED_ACTION } from '#src/state/refusals.js';
import { NONCES_PER_PARTITION } from '#src/state/index.js';
import { newKey, startTestApp, type Reply, type TestApp, type TestKey } from '@ocs/node-daemon/testing';

const MiB = 1024 * 1024;
const PER_WINDOW = 60; // RefusalBudget's default

/** Runs `n` requests, `concurrency` at a time; every reply must be a JSON 4xx refusal. */
async function flood(n: number, next: (i: number) => Promise<Reply>, codes: Map<string, number>, concurrency = 8) {
  let i = 0;
  const worker = async () => {
    while (i < n) {
      const r = await next(i++);
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${r.text.slice(0, 200)}`);
      assert.match(r.type, /^application\/json/);
      const code = r.body.error?.code;
      assert.ok(code, r.text.slice(0, 200));
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function refusalsCounted(t: TestApp): Promise<Map<string, number>> {
  const m = await t.metrics.refusals.get();
  return new Map(m.values.map((v) => [String(v.labels.code), v.value]));
}

function createBody(key: TestKey, cpuMillicores: number) {
  return {
    ownerKey: key.public.toBase64url(),
    resources: { cpuMillicores, memoryBytes: 16 * MiB, storageBytes: 0 },
    leaseSeconds: 600,
  };
}

test('flood: 100,000 refused requests leave the audit log and the replay cache bounded, and the owner is answered', async () => {
  // Two spaces use up the uid range: a reservation that fits the capacity is still refused, after
  // its nonce was stored (the uid count is not among the cheap checks), which is what a share bounds.
  const t = await startTestApp({ uidCount: 2 });
  try {
    const alice = newKey();
    const spaceA = t.addSpace('org-a', alice);
    t.addSpace('org-b', newKey());
    const aliceToken = await t.token(['spaces'], { sub: 'alice', org: 'org-a' });
    const malloryToken = await t.token(['spaces'], { sub: 'mallory', org: 'org-m' });
    const bobToken = await t.token(['spaces'], { sub: 'bob', org: 'org-b' });
    const ownerAnswered = async () => {
      const lock = await t.send('POST', `/v1/spaces/${spaceA}/lock`, { token: aliceToken, sign: alice });
      assert.equal(lock.status, 200, lock.text);
      const get = await t.send('GET', `/v1/spaces/${spaceA}`, { token: aliceToken });
      assert.equal(get.status, 200, get.text);
    };
    await ownerAnswered();
    const auditBefore = t.audit.head().seq;
    const codes = new Map<string, number>();

    // 1. 44,000 from callers who proved nothing: no token, a bogus token, unknown paths, hostile ids.
    const anonymous = [
      () => t.send('GET', '/v1/spaces'),
      () => t.send('GET', '/v1/no-such-route'),
      () => t.send('GET', `/v1/spaces/${spaceA}`, { token: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln' }),
      () => t.send('GET', '/v1/spaces/sp_%0a%1b'),
      () => t.send('POST', `/v1/spaces/${spaceA}%00/lock`),
      () => t.send('GET', `/v1/spaces/sp_${'a'.repeat(300)}`),
    ];
    await flood(44_000, (i) => anonymous[i % anonymous.length]!(), codes);
    assert.equal(t.audit.head().seq, auditBefore, 'unauthenticated refusals are counted, not chained');
    await ownerAnswered();

    // 2. 28,000 by one principal with a valid token: other orgs' spaces, a role it lacks, hostile ids.
    const authenticated = [
      () => t.send('GET', `/v1/spaces/${spaceA}`, { token: malloryToken }),
      () => t.send('POST', `/v1/spaces/${spaceA}/lock`, { token: malloryToken }),
      () => t.send('GET', '/v1/audit', { token: malloryToken }),
      () => t.send('GET', '/v1/spaces/sp_%0a%1b', { token: malloryToken }),
    ];
    await flood(28_000, (i) => authenticated[i % authenticated.length]!(), codes);

    // 3. 16,000 reservations signed by throwaway keys that cannot fit: refused before any nonce is kept.
    const throwaway = Array.from({ length: 64 }, () => newKey());
    const noncesBefore = t.db.prepare('SELECT count(*) FROM nonces').pluck().get() as number;
    await flood(
      16_000,
      (i) => {
        const k = throwaway[i % throwaway.length]!;
        return t.send('POST', '/v1/spaces', { token: malloryToken, sign: k, json: createBody(k, 1_000_000) });
      },
      codes,
    );
    assert.equal(t.db.prepare('SELECT count(*) FROM nonces').pluck().get(), noncesBefore, 'cheap checks first');
    await ownerAnswered();

    // 4. 12,000 that fit but are refused at reservation: their nonces count against mallory's share only.
    await flood(
      12_000,
      (i) => {
        const k = throwaway[i % throwaway.length]!;
        return t.send('POST', '/v1/spaces', { token: malloryToken, sign: k, json: createBody(k, 10) });
      },
      codes,
    );
    await ownerAnswered();
    // Another principal of the node still has its share.
    const bob = newKey();
    const bobCreate = await t.send('POST', '/v1/spaces', { token: bobToken, sign: bob, json: createBody(bob, 10) });
    assert.equal(bobCreate.body.error?.code, 'capacity_exceeded', bobCreate.text);

    // Every refusal answered with its code, and every one counted in the metric.
    assert.equal(
      [...codes.values()].reduce((a, b) => a + b, 0),
      100_000,
    );
    assert.equal(codes.get('rate_limited'), 12_000 - NONCES_PER_PARTITION);
    assert.equal(codes.get('capacity_exceeded'), 16_000 + NONCES_PER_PARTITION);
    assert.equal(codes.get('internal'), undefined);
    const counted = await refusalsCounted(t);
    for (const [code, n] of codes) assert.equal(counted.get(code), n + (code === 'capacity_exceeded' ? 1 : 0), code);

    // The replay cache: mallory holds exactly its share, whatever keys it signed with.
    const held = t.db.prepare('SELECT charged_to AS p, count(*) AS n FROM nonces GROUP BY charged_to').all() as {
      p: string;
      n: number;
    }[];
    const mallorys = held.filter((h) => h.p.endsWith(' mallory'));
    assert.deepEqual(
      mallorys.map((h) => h.n),
      [NONCES_PER_PARTITION],
    );
    const total = held.reduce((a, h) => a + h.n, 0);
    assert.ok(total <= NONCES_PER_PARTITION + 10, `${total} nonces held`);

    // The audit log: mallory's budget, then one summary of the rest once the window is over.
    const entries = () => t.audit.page({ after: auditBefore, limit: 1000 }).entries;
    const chained = entries().filter((e) => e.actor === 'mallory');
    assert.equal(chained.length, PER_WINDOW);
    assert.ok(entries().length <= PER_WINDOW + 10, `${entries().length} entries`);
    const actors = new Set(entries().map((e) => e.actor));
    for (const a of actors) assert.ok(['mallory', 'bob', alice.public.fingerprint()].includes(a), a);
    t.clock.advance(61_000);
    t.refusals.flush();
    const summaries = entries().filter((e) => e.action === DROPPED_ACTION);
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0]!.actor, 'mallory');
    assert.equal(summaries[0]!.detail?.dropped, 28_000 + 16_000 + 12_000 - PER_WINDOW);
    assert.equal(t.audit.verify().ok, true);
  } finally {
    await t.close();
  }
});
