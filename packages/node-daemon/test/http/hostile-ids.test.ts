/**
 * Item: malformed ids. Whatever a caller puts where an id goes, the daemon answers a JSON 4xx
 * with a stable code, and recording the refusal never fails because of what was sent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NODE_FINGERPRINT, newKey, startTestApp } from '@ocs/node-daemon/testing';

const LONG = `sp_${'a'.repeat(300)}`;

test('hostile ids on the daemon API: always a JSON 4xx with its code, never a 500, and the audit chain holds', async () => {
  const t = await startTestApp();
  try {
    const owner = newKey();
    const space = t.addSpace('org-a', owner);
    const principals = {
      anonymous: undefined,
      member: await t.token(['spaces'], { sub: 'member\n\u001b[2J', org: 'org-a' }),
      farmer: await t.token(['farmer'], { sub: 'farmer', org: 'org-f' }),
    };
    // [method, path as sent, code for: anonymous, member, farmer]
    const NF = ['not_found', 'not_found', 'not_found'];
    const table: [string, string, string[]][] = [
      ['POST', `/v1/spaces/${space}%00/lock`, NF],
      ['GET', `/v1/spaces/${LONG}`, NF],
      ['GET', '/v1/spaces/sp_%0a%1b', NF],
      ['DELETE', `/v1/spaces/${space}%0d%0aforged`, NF],
      ['POST', '/v1/spaces/sp_%ff%fe/renew', NF],
      ['POST', '/v1/spaces/%E2%80%A8/unlock', NF],
      ['POST', '/v1/spaces/..%2F..%2Fetc%2Fpasswd/rotate-key', NF],
      ['GET', '/v1/spaces/%25%00%ZZ', NF],
      ['GET', `/v1/spaces/${space.toUpperCase()}`, NF],
      ['GET', `/v1/spaces/${space}%20`, NF],
      ['GET', `/v1/spaces/${'%ed%a0%80'.repeat(40)}`, NF],
      ['GET', `/v1/spaces/${LONG}/api/status`, NF],
      ['GET', '/v1/spaces/sp_%0a/api/status', NF],
      // Shaped like an id for the forwarder, which asks for workload roles before it looks.
      ['GET', '/v1/spaces/sp_short/api/status', ['token_missing', 'role_missing', 'role_missing']],
      ['GET', `/v1/${'x'.repeat(2000)}%00`, NF],
    ];
    for (const [method, path, codes] of table) {
      for (const [i, [who, token]] of Object.entries(principals).entries()) {
        const r = await t.send(method, path, token === undefined ? {} : { token });
        const label = `${who} ${method} ${path.slice(0, 60)}`;
        assert.ok(r.status >= 400 && r.status < 500, `${label}: ${r.status} ${r.text.slice(0, 120)}`);
        assert.match(r.type, /^application\/json/, label);
        assert.equal(r.body.error?.code, codes[i], label);
      }
    }
    // What the authenticated callers were refused is chained, escaped; the chain verifies.
    const entries = t.audit.page({ limit: 1000 }).entries;
    assert.ok(entries.length > 0);
    for (const e of entries) {
      // eslint-disable-next-line no-control-regex -- control characters are what is looked for
      assert.doesNotMatch(`${e.actor} ${e.action} ${e.target ?? ''} ${JSON.stringify(e.detail ?? {})}`, /[\n\r\u001b]/);
      assert.ok((e.target ?? '').length <= 256);
    }
    assert.ok(entries.some((e) => e.actor === 'member\\u000a\\u001b[2J'));
    assert.equal(t.audit.verify().ok, true);
  } finally {
    await t.close();
  }
});

test('a refusal is still its JSON 4xx when its audit entry cannot be written', async () => {
  const t = await startTestApp();
  try {
    const token = await t.token(['spaces'], { sub: 'member', org: 'org-a' });
    // The audit log refuses every write from here on (as a full disk or a locked file would).
    t.db.exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
    const r = await t.send('GET', '/v1/spaces/sp_aaaaaaaaaaaaaaaaaaaa', { token });
    assert.equal(r.status, 404, r.text);
    assert.equal(r.body.error?.code, 'not_found');
  } finally {
    await t.close();
  }
});

test('a DELETE with a body is refused before anything is done, signed or not', async () => {
  const t = await startTestApp();
  try {
    const owner = newKey();
    const space = t.addSpace('org-a', owner);
    const member = await t.token(['spaces'], { sub: 'member', org: 'org-a' });
    const farmer = await t.token(['farmer'], { sub: 'farmer', org: 'org-f' });
    for (const [who, o] of [
      ['owner-signed', { token: member, sign: owner }],
      ['farmer', { token: farmer }],
    ] as const) {
      const r = await t.send('DELETE', `/v1/spaces/${space}`, { ...o, json: { force: true } });
      assert.equal(r.status, 400, `${who}: ${r.text}`);
      assert.equal(r.body.error?.code, 'invalid_request', who);
      assert.match(r.body.error?.message ?? '', /DELETE requests take no body/);
      assert.equal(t.repo.get(space)?.state, 'active', `${who}: the space is still there`);
    }
  } finally {
    await t.close();
  }
});

test('a request the owner signed for another node is refused here, under any name this node has', async () => {
  const t = await startTestApp();
  try {
    const owner = newKey();
    const space = t.addSpace('org-a', owner);
    const member = await t.token(['spaces'], { sub: 'member', org: 'org-a' });
    // Same Host, same port, same owner and token: only the certificate the owner pinned differs.
    const other = NODE_FINGERPRINT.replace(/^[0-9A-F]{2}/, 'FF');
    const r = await t.send('DELETE', `/v1/spaces/${space}`, {
      token: member,
      sign: owner,
      headers: { 'ocs-node': other },
    });
    assert.equal(r.status, 421, r.text);
    assert.equal(r.body.error?.code, 'misdirected_request');
    assert.equal(t.repo.get(space)?.state, 'active', 'the space is still there');
    // The control: signed for this node, the same request is done.
    assert.equal((await t.send('DELETE', `/v1/spaces/${space}`, { token: member, sign: owner })).status, 204);
  } finally {
    await t.close();
  }
});
