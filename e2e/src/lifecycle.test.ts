/**
 * Leases, idle processes and the capacity ledger, on a real node with a frozen clock where
 * time matters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '@ocs/node-daemon/testing';
import { generatePrivateKey, type CreateSpaceResponse, type Space } from '@ocs/protocol';
import { startTestNode, MiB, type TestNode } from './harness.js';

const small = { cpuMillicores: 500, memoryBytes: 128 * MiB, storageBytes: 32 * MiB };

async function reserve(t: TestNode, leaseSeconds = 600) {
  const owner = generatePrivateKey();
  const c = t.client({ roles: ['spaces'], owner });
  const r = await c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources: small,
    leaseSeconds,
  });
  return { owner, ...r.body };
}

const code = (r: { body: unknown }) => (r.body as { error?: { code: string } }).error?.code;

test('lease expiry locks and stops the space; renew keeps it locked; after grace it is destroyed; the schedule survives a restart', async () => {
  const clock = new ManualClock(Date.now());
  let t = await startTestNode({ clock });
  try {
    const a = await reserve(t, 60);
    const b = await reserve(t, 60);
    await t.client({ roles: ['monitor'], owner: a.owner }).call('GET', `${a.space.apiBase}/status`);
    assert.equal(t.node.supervisor.isRunning(a.space.id), true);

    clock.advance(61_000);
    await t.node.leases.tick();
    const expired = (await t.client({ roles: ['monitor'] }).call<Space>('GET', `/v1/spaces/${a.space.id}`)).body;
    assert.equal(expired.state, 'expired');
    assert.equal(t.node.supervisor.isRunning(a.space.id), false);
    assert.equal((await t.storage.info(a.space.id)).unlocked, false);
    assert.equal(
      code(await t.client({ roles: ['monitor'], owner: a.owner }).send('GET', `${a.space.apiBase}/status`)),
      'lease_expired',
    );

    // Renewing an expired space keeps it locked: only the owner's key opens it again.
    const renewed = (
      await t
        .client({ roles: ['spaces'], owner: a.owner })
        .call<Space>('POST', `/v1/spaces/${a.space.id}/renew`, { leaseSeconds: 3600 })
    ).body;
    assert.equal(renewed.state, 'locked');

    // b is left to run out; the daemon restarts in between and still destroys it on time.
    await t.stop({ keepHost: true });
    clock.advance(61_000); // past b's grace (60 s)
    t = await startTestNode({ clock, reuse: t.reuse });
    const bNow = await t.client({ roles: ['monitor'] }).send('GET', `/v1/spaces/${b.space.id}`);
    assert.equal(code(bNow), 'not_found');
    assert.equal((await t.storage.list()).includes(b.space.id), false);
    assert.equal(
      (await t.client({ roles: ['monitor'] }).call<Space>('GET', `/v1/spaces/${a.space.id}`)).body.state,
      'locked',
    );
  } finally {
    await t.stop();
  }
});

test('an idle space process exits and the next request starts it again', async () => {
  const t = await startTestNode({ idleSeconds: 1 });
  try {
    const a = await reserve(t);
    const c = t.client({ roles: ['monitor'], owner: a.owner });
    await c.call('GET', `${a.space.apiBase}/status`);
    const firstPid = t.node.supervisor.pidOf(a.space.id);
    assert.ok(firstPid);
    for (let i = 0; i < 50 && t.node.supervisor.isRunning(a.space.id); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(t.node.supervisor.isRunning(a.space.id), false, 'idle process did not exit');
    await c.call('GET', `${a.space.apiBase}/status`);
    assert.notEqual(t.node.supervisor.pidOf(a.space.id), firstPid);

    // The replay cache lives in the space's own database: a request signed before an idle
    // exit is still refused after the restart.
    const { headers, token } = await t.captureSigned(a.owner, 'GET', `${a.space.apiBase}/status`, ['monitor']);
    const raw = t.client({ token: async () => token });
    const once = await raw.send('GET', `${a.space.apiBase}/status`, undefined, { headers, sign: false });
    assert.equal(once.status, 200, JSON.stringify(once.body));
    const pid = t.node.supervisor.pidOf(a.space.id);
    for (let i = 0; i < 50 && t.node.supervisor.isRunning(a.space.id); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(t.node.supervisor.isRunning(a.space.id), false, 'idle process did not exit');
    const again = await raw.send('GET', `${a.space.apiBase}/status`, undefined, { headers, sign: false });
    assert.equal(code(again), 'replayed');
    assert.notEqual(t.node.supervisor.pidOf(a.space.id), pid, 'answered by a fresh process');
  } finally {
    await t.stop();
  }
});

test('a space process that dies is restarted with backoff', async () => {
  const t = await startTestNode();
  try {
    const a = await reserve(t);
    const c = t.client({ roles: ['monitor'], owner: a.owner });
    await c.call('GET', `${a.space.apiBase}/status`);
    const pid = t.node.supervisor.pidOf(a.space.id)!;
    process.kill(pid, 'SIGKILL');
    let next: number | undefined;
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      next = t.node.supervisor.pidOf(a.space.id);
      if (next && next !== pid) break;
    }
    assert.ok(next && next !== pid, 'not restarted');
    await c.call('GET', `${a.space.apiBase}/status`);
  } finally {
    await t.stop();
  }
});

test('100 concurrent reservations racing for the last capacity: exactly what fits wins', async () => {
  const t = await startTestNode({
    total: { cpuMillicores: 2500, memoryBytes: 8 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
  });
  try {
    const results = await Promise.all(
      Array.from({ length: 100 }, async () => {
        const owner = generatePrivateKey();
        return t
          .client({ roles: ['spaces'], owner })
          .send('POST', '/v1/spaces', { ownerKey: owner.publicKey.toBase64url(), resources: small, leaseSeconds: 600 });
      }),
    );
    const won = results.filter((r) => r.status === 201).length;
    const refused = results.filter((r) => code(r) === 'capacity_exceeded').length;
    assert.equal(
      won,
      5,
      // With the daemon's own account of any failure: the host step that failed, and why.
      JSON.stringify(results.filter((r) => r.status !== 201 && code(r) !== 'capacity_exceeded').map((r) => r.body)) +
        t.logs.filter((l) => l.includes('space creation failed') || l.includes('rollback incomplete')).join(''),
    );
    assert.equal(refused, 95);
    assert.equal(t.node.ledger.used().cpuMillicores, 2500);
    assert.equal((await t.storage.list()).length, 5);
  } finally {
    await t.stop();
  }
});

test('a signed request to the daemon is refused as replayed after a daemon restart too', async () => {
  let t = await startTestNode();
  try {
    const a = await reserve(t);
    const { headers, body, token } = await t.captureSigned(
      a.owner,
      'POST',
      `/v1/spaces/${a.space.id}/lock`,
      ['spaces', 'storage'],
      {},
    );
    const send = (node: TestNode) =>
      node.client({ token: async () => token }).send('POST', `/v1/spaces/${a.space.id}/lock`, undefined, {
        raw: body!,
        contentType: 'application/json',
        headers,
        sign: false,
      });
    assert.equal((await send(t)).status, 200);
    const port = Number(new URL(t.node.url).port);
    await t.stop({ keepHost: true });
    // Same node, same port: the captured request names this node's authority, so everything
    // but the nonce is as valid as before.
    t = await startTestNode({ reuse: t.reuse, port });
    assert.equal(code(await send(t)), 'replayed');
  } finally {
    await t.stop();
  }
});
