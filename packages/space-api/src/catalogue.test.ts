/**
 * Every route of the space API's catalogue is bound by the space process, each to a handler of
 * its own or to the broker op of its entry (`createSpaceApp` refuses to start otherwise).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Router from '@koa/router';
import { pino } from 'pino';
import { OcsError, SPACE_ROUTES, generatePrivateKey, operationOfRoute, type SpaceProcessConfig } from '@ocs/protocol';
import { routerPath } from '@ocs/http';
import { createSpaceApp } from './app.js';
import { openSpaceState } from './state.js';
import type { BrokerCall } from './broker-client.js';

const SPACE = 'sp_aaaaaaaaaaaaaaaaaaaa';
const dir = mkdtempSync(join(tmpdir(), 'ocs-space-catalogue-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('every route of the catalogue is bound by the space process, under its method and path', () => {
  const config = {
    spaceId: SPACE,
    ownerKey: generatePrivateKey().publicKey.toOpenSsh('owner@test'),
    org: 'org-a',
    resources: { cpuMillicores: 500, memoryBytes: 256 * 1024 * 1024, storageBytes: 64 * 1024 * 1024 },
    authorities: ['node-1.test:8443'],
    tlsFingerprint: 'AA',
    dataDir: join(dir, 'data'),
  } as unknown as SpaceProcessConfig;
  const state = openSpaceState(config.dataDir);
  after(() => state.close());
  const app = createSpaceApp({
    config,
    verifyToken: () => Promise.reject(new OcsError('token_missing', 'no tokens here')),
    state,
    broker: (() => Promise.reject(new Error('no broker here'))) as BrokerCall,
    logger: pino({ level: 'silent' }),
  });
  const router = app.middleware.map((m) => (m as { router?: Router }).router).find((r): r is Router => r !== undefined);
  assert.ok(router, 'the app mounts a router');
  const bound = new Set(
    router.stack.flatMap((layer) => layer.methods.filter((m) => m !== 'HEAD').map((m) => `${m} ${String(layer.path)}`)),
  );
  const expected = SPACE_ROUTES.map((r) => `${r.method} /v1/spaces/${SPACE}/api${routerPath(r.path)}`);
  assert.deepEqual([...bound].sort(), [...expected].sort());
  for (const r of SPACE_ROUTES) assert.ok(operationOfRoute(r.id), `${r.id} has a catalogue entry`);
});
