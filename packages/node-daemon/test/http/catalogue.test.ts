/**
 * Every route of the node's catalogue is bound by the daemon under its method and path: asked
 * without a token, each answers something of its own (a refusal of the token, the health
 * report), never the router's `404 no such route` or `405`, which a path or method outside
 * the catalogue gets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NODE_ROUTES } from '@ocs/protocol';
import { newKey, startTestApp } from '@ocs/node-daemon/testing';

test('every route of the node catalogue is bound by the daemon, under its method and path', async () => {
  const t = await startTestApp();
  try {
    const space = t.addSpace('org-a', newKey());
    const unbound = (r: { status: number; body: { error?: { code: string; message: string } } }) =>
      r.status === 405 || (r.status === 404 && r.body.error?.message === 'no such route');
    // The check tells bound from unbound: a path outside the catalogue, a method it lacks.
    assert.ok(unbound(await t.send('GET', '/v1/nothing-here')));
    assert.ok(unbound(await t.send('DELETE', '/v1/node')));
    for (const r of NODE_ROUTES) {
      const reply = await t.send(r.method, r.path.replace('{spaceId}', space));
      assert.ok(!unbound(reply), `${r.id}: ${r.method} ${r.path} answered ${reply.status} ${reply.text}`);
    }
  } finally {
    await t.close();
  }
});
