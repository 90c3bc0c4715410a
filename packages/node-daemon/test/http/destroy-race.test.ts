/** Two deletes of one space at once: one tears it down, the other is refused, never a second teardown. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupsDestroying, newKey, startTestApp } from '@ocs/node-daemon/testing';

test('concurrent deletes of one space: one 204, the rest 409, and the host is torn down once', async () => {
  let teardowns = 0;
  const cgroups = cgroupsDestroying(async () => {
    teardowns++;
    // Slow enough that the others arrive while the first is still removing things.
    await new Promise((r) => setTimeout(r, 100));
  });
  const app = await startTestApp({ cgroups });
  try {
    const owner = newKey();
    const id = app.addSpace('org-a', owner);
    const token = await app.token(['spaces'], { org: 'org-a' });
    const rs = await Promise.all([0, 1, 2].map(() => app.send('DELETE', `/v1/spaces/${id}`, { token, sign: owner })));
    const got = rs.map((r) => r.status).sort();
    assert.deepEqual(got, [204, 409, 409], JSON.stringify(rs.map((r) => r.body)));
    for (const r of rs.filter((x) => x.status === 409)) assert.equal(r.body.error?.code, 'conflict');
    assert.equal(teardowns, 1);
    assert.equal((await app.send('DELETE', `/v1/spaces/${id}`, { token, sign: owner })).status, 404);
  } finally {
    await app.close();
  }
});
