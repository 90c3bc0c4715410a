/** Item: what operators see. Every refusal counts in `ocs_refusals_total`, by code, whoever asked. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestApp } from '@ocs/node-daemon/testing';

test('ocs_refusals_total counts every refusal by code, authenticated or not', async () => {
  const t = await startTestApp();
  try {
    const member = await t.token(['spaces'], { sub: 'member', org: 'org-a' });
    const sent: [string, string, string | undefined][] = [
      ['GET', '/v1/spaces', undefined],
      ['GET', '/v1/spaces', undefined],
      ['GET', '/v1/spaces', 'not.a.token'],
      ['GET', '/v1/nothing-here', undefined],
      ['GET', '/v1/spaces/sp_aaaaaaaaaaaaaaaaaaaa', member],
      ['GET', '/v1/audit', member],
      ['PUT', '/v1/spaces', member],
    ];
    for (const [method, path, token] of sent) await t.send(method, path, token === undefined ? {} : { token });
    const r = await t.send('GET', '/metrics', {
      token: await t.token(['monitor'], { sub: 'scraper', org: 'org-ops' }),
    });
    assert.equal(r.status, 200);
    const counted = Object.fromEntries(
      [...r.text.matchAll(/^ocs_refusals_total\{code="([a-z_]+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]),
    );
    assert.deepEqual(counted, {
      token_missing: 2,
      token_malformed: 1,
      not_found: 2,
      role_missing: 1,
      method_not_allowed: 1,
    });
  } finally {
    await t.close();
  }
});

test('/metrics answers the node monitors and its farmer only', async () => {
  const t = await startTestApp();
  try {
    const anonymous = await t.send('GET', '/metrics');
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.error?.code, 'token_missing');
    assert.doesNotMatch(anonymous.text, /ocs_/, 'nothing of the metrics in the refusal');
    for (const role of ['spaces', 'storage', 'containers', 'vms'] as const) {
      const r = await t.send('GET', '/metrics', { token: await t.token([role], { sub: role, org: 'org-a' }) });
      assert.equal(r.status, 403, role);
      assert.equal(r.body.error?.code, 'role_missing', role);
    }
    for (const role of ['monitor', 'farmer'] as const) {
      const r = await t.send('GET', '/metrics', { token: await t.token([role], { sub: role, org: 'org-ops' }) });
      assert.equal(r.status, 200, role);
      assert.match(r.text, /^ocs_refusals_total\{code="role_missing"\} 4$/m, role);
    }
  } finally {
    await t.close();
  }
});
