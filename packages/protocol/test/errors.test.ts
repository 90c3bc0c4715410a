import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, ERROR_STATUS, OcsError, isErrorCode } from '@ocs/protocol';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
const documented = new Map(
  [...doc.matchAll(/^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/gm)].map((m) => [m[1]!, Number(m[2])] as const),
);

test('every error code is documented in docs/errors.md with its status, and nothing stale is', () => {
  for (const code of ERROR_CODES) {
    assert.equal(documented.get(code), ERROR_STATUS[code], `docs/errors.md: ${code} missing or wrong status`);
  }
  for (const code of documented.keys()) assert.ok(isErrorCode(code), `docs/errors.md documents unknown code ${code}`);
});

test('statuses are client errors except internal, unavailable and host_failed', () => {
  for (const code of ERROR_CODES) {
    const s = ERROR_STATUS[code];
    if (code === 'internal') assert.equal(s, 500);
    else if (code === 'unavailable') assert.equal(s, 503);
    else if (code === 'host_failed') assert.equal(s, 502);
    else assert.ok(s >= 400 && s < 500, `${code} -> ${s}`);
  }
});

test('OcsError carries code, status and a body without extra fields', () => {
  const e = new OcsError('not_owner', 'not yours', { spaceId: 'sp_x' });
  assert.equal(e.status, 403);
  assert.deepEqual(e.toBody(), { error: { code: 'not_owner', message: 'not yours', details: { spaceId: 'sp_x' } } });
  assert.deepEqual(new OcsError('internal', 'x').toBody(), { error: { code: 'internal', message: 'x' } });
});
