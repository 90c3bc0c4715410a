/** A node operation the host fails under answers `host_failed` naming the part, never 500, and keeps the detail in the log. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupsDestroying, newKey, startTestApp } from '@ocs/node-daemon/testing';

test('a destroy the host fails under is host_failed (502) naming the host; the detail stays out of the answer', async () => {
  const detail = 'EBUSY: /sys/fs/cgroup/ocs-test.slice/secret-path';
  const cgroups = cgroupsDestroying(async () => {
    throw new Error(detail);
  });
  const app = await startTestApp({ cgroups });
  try {
    const owner = newKey();
    const id = app.addSpace('org-a', owner);
    const token = await app.token(['spaces'], { org: 'org-a' });
    const r = await app.send('DELETE', `/v1/spaces/${id}`, { token, sign: owner });
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.equal(r.body.error?.code, 'host_failed');
    assert.equal(r.body.error?.message, "the host failed to carry out deleteSpace; the node's log has the detail");
    assert.doesNotMatch(JSON.stringify(r.body), /EBUSY|secret-path/);
  } finally {
    await app.close();
  }
});
