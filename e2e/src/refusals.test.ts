/**
 * Items: malformed ids, floods and `ocs_refusals_total`, on a real node over TLS: hostile ids
 * are JSON 4xx refusals, every refusal is counted by code, and only an authenticated caller's
 * refusal reaches the audit log, escaped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { startTestNode, type TestNode } from './harness.js';

function send(t: TestNode, method: string, path: string, token?: string) {
  const url = new URL(t.node.url);
  return new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        ca: t.node.tls.cert,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            type: String(res.headers['content-type'] ?? ''),
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('a real node: hostile ids are JSON 4xx, every refusal is counted by code, only a known caller is audited', async () => {
  const t = await startTestNode();
  try {
    const before = t.node.audit.head().seq;
    const token = await t.token(['spaces'], { sub: 'member' });
    const sent: [string, string, string | undefined, string][] = [
      ['POST', '/v1/spaces/sp_aaaaaaaaaaaaaaaaaaaa%00/lock', undefined, 'not_found'],
      ['GET', `/v1/spaces/sp_${'a'.repeat(300)}`, undefined, 'not_found'],
      ['GET', '/v1/spaces/sp_%0a%1b', undefined, 'not_found'],
      ['GET', '/v1/spaces', undefined, 'token_missing'],
      ['GET', '/v1/spaces/sp_%0a%1b', token, 'not_found'],
    ];
    for (const [method, path, tok, code] of sent) {
      const r = await send(t, method, path, tok);
      assert.ok(r.status >= 400 && r.status < 500, `${method} ${path}: ${r.status} ${r.text}`);
      assert.match(r.type, /^application\/json/);
      assert.equal((JSON.parse(r.text) as { error: { code: string } }).error.code, code);
    }
    const metrics = await send(t, 'GET', '/metrics', await t.token(['monitor'], { sub: 'scraper' }));
    const counted = (code: string) =>
      Number(new RegExp(`^ocs_refusals_total\\{code="${code}"\\} (\\d+)$`, 'm').exec(metrics.text)?.[1] ?? 0);
    assert.equal(counted('not_found'), 4);
    assert.equal(counted('token_missing'), 1);
    const entries = t.node.audit.page({ after: before, limit: 100 }).entries;
    assert.deepEqual(
      entries.map((e) => [e.actor, e.code, e.target]),
      [['member', 'not_found', 'sp_\\u000a\\u001b']],
    );
    assert.equal(t.node.audit.verify().ok, true);
  } finally {
    await t.stop();
  }
});
