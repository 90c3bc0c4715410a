/**
 * A lock answers at once: `locking` while the space still shuts down (its workloads in their
 * stop grace, a key fscrypt cannot evict while a file is open), `locked` once it has. Nothing
 * of the space opens meanwhile, and a step that fails is tried again until it ends. The host
 * is a double here (the order and the states are under test); e2e/src/lock.test.ts locks real
 * spaces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Space } from '@ocs/protocol';
import { newKey, startTestApp, type TestApp } from '@ocs/node-daemon/testing';

async function settle(app: TestApp, id: string, token: string, owner: ReturnType<typeof newKey>): Promise<Space> {
  for (let i = 0; i < 100; i++) {
    const r = await app.send('GET', `/v1/spaces/${id}`, { token, sign: owner });
    const s = r.body as unknown as Space;
    if (s.state !== 'locking') return s;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('still locking');
}

test('a lock held by its workloads answers locking at once; nothing opens the space until it is locked', async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const app = await startTestApp({ stopWorkloads: () => held });
  try {
    const owner = newKey();
    const id = app.addSpace('org-a', owner);
    const token = await app.token(['spaces', 'storage'], { org: 'org-a' });
    const r = await app.send('POST', `/v1/spaces/${id}/lock`, { token, sign: owner, json: {} });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const s = r.body as unknown as Space;
    assert.equal(s.state, 'locking');
    assert.equal(s.locking?.step, 'workloads');
    assert.equal(s.storage.unlocked, false);

    // Meanwhile: no unlock, no re-key, no archive, no space API; a second lock answers the same.
    const unlock = await app.send('POST', `/v1/spaces/${id}/unlock`, {
      token,
      sign: owner,
      json: { sealedKey: 'AAAA' },
    });
    assert.equal(unlock.body.error?.code, 'conflict');
    const archive = await app.send('GET', `/v1/spaces/${id}/archive`, { token, sign: owner });
    assert.equal(archive.body.error?.code, 'conflict');
    const api = await app.send('GET', `/v1/spaces/${id}/api/status`, { token, sign: owner });
    assert.equal(api.body.error?.code, 'space_locked');
    const again = await app.send('POST', `/v1/spaces/${id}/lock`, { token, sign: owner, json: {} });
    assert.equal((again.body as unknown as Space).state, 'locking');
    // A renew is only the lease: it goes through.
    const renew = await app.send('POST', `/v1/spaces/${id}/renew`, {
      token,
      sign: owner,
      json: { leaseSeconds: 7200 },
    });
    assert.equal(renew.status, 200, JSON.stringify(renew.body));

    release();
    const done = await settle(app, id, token, owner);
    assert.equal(done.state, 'locked');
    assert.equal(done.locking, undefined);
    const locks = app.audit.page({ after: 0, limit: 100 }).entries.filter((e) => e.action === 'space.lock');
    assert.deepEqual(
      locks.map((e) => [e.target, e.outcome]),
      [[id, 'ok']],
      'one lock, recorded once it ended',
    );
  } finally {
    await app.close();
  }
});

test('a key that cannot be evicted yet: the lock says why and is tried again until it ends', async () => {
  let fails = 2;
  const app = await startTestApp({
    lockStorage: async () => {
      if (fails-- > 0) throw Object.assign(new Error('files busy: /secret/mnt/path'), { code: 'EBUSY' });
    },
  });
  try {
    const owner = newKey();
    const id = app.addSpace('org-a', owner);
    const token = await app.token(['spaces'], { org: 'org-a' });
    const r = await app.send('POST', `/v1/spaces/${id}/lock`, { token, sign: owner, json: {} });
    const s = r.body as unknown as Space;
    assert.equal(s.state, 'locking');
    assert.equal(s.locking?.step, 'storage');
    assert.match(s.locking?.error ?? '', /storage step failed/);
    assert.doesNotMatch(JSON.stringify(s), /secret|EBUSY/, "the host's detail stays in the log");
    assert.equal((await settle(app, id, token, owner)).state, 'locked');
    assert.equal(fails, -1, 'tried until it ended');
  } finally {
    await app.close();
  }
});
