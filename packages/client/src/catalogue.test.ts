/**
 * Every route of both APIs has a typed method in the SDK. The methods are written by hand (their
 * arguments are what a caller has: names, a file, a wrapped key), so this test holds them to the
 * catalogue by the route each one calls: `nodeRoute('<id>')` or, in a space's API, `r('<id>'`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { NODE_ROUTES, SPACE_ROUTES } from '@ocs/protocol';

const source = readFileSync(new URL('../src/resources.ts', import.meta.url), 'utf8');

test('every route of the catalogue has an SDK method, and every method calls a route of the catalogue', () => {
  const called = (re: RegExp) => new Set([...source.matchAll(re)].map((m) => m[1]!));
  const node = called(/\bnodeRoute\('(\w+)'\)/g);
  const space = called(/\br\('(\w+)'/g);
  assert.deepEqual([...node].sort(), NODE_ROUTES.map((r) => r.id).sort());
  assert.deepEqual([...space].sort(), SPACE_ROUTES.map((r) => r.id).sort());
});
