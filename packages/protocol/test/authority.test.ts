import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authoritySet, checkAuthority, normalizeAuthority, parserRefusal } from '@ocs/protocol';

test('authorities are normalized: case, default port, trailing dot, IPv6 brackets', () => {
  assert.equal(normalizeAuthority('Node-A.Example:8443'), 'node-a.example:8443');
  assert.equal(normalizeAuthority('node-a.example.'), 'node-a.example:443');
  assert.equal(normalizeAuthority('[::1]:8443'), '[::1]:8443');
  const allowed = authoritySet(['localhost', '127.0.0.1', '::1', 'node-a.example:9000'], 8443);
  assert.deepEqual([...allowed].sort(), ['127.0.0.1:8443', '[::1]:8443', 'localhost:8443', 'node-a.example:9000']);
});

test('a Host that is not one of ours, or is not an authority at all, is refused', () => {
  const allowed = authoritySet(['node-a.example'], 8443);
  checkAuthority('node-a.example:8443', allowed);
  checkAuthority('NODE-A.example:8443', allowed);
  for (const host of [
    'node-b.example:8443',
    'node-a.example',
    'node-a.example:443',
    'node-a.example:8443/x',
    'user@node-a.example:8443',
    'node-a.example:99999',
    'node-a.example:8443\r\nx: y',
    'n\u00f6de-a.example:8443',
    'a'.repeat(400),
  ]) {
    assert.throws(() => checkAuthority(host, allowed), { code: 'misdirected_request' }, host);
  }
  assert.throws(() => checkAuthority(undefined, allowed), { code: 'invalid_request' });
  assert.throws(() => checkAuthority('', allowed), { code: 'invalid_request' });
});

test("Node's parser errors map to stable codes", () => {
  assert.equal(parserRefusal('HPE_HEADER_OVERFLOW').code, 'headers_too_large');
  assert.equal(parserRefusal('HPE_HEADER_OVERFLOW').status, 431);
  assert.equal(parserRefusal('HPE_INVALID_METHOD').code, 'invalid_request');
  assert.equal(parserRefusal(undefined).status, 400);
});
