import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configWarnings, loadConfigFile, resolveConfig } from './config.js';

function file(t: { after(fn: () => void): void }, content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.json');
  writeFileSync(path, JSON.stringify(content));
  return path;
}

const JWKS = { keys: [{ kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', kid: 'k' }] };

test('maxTokenLifetimeSeconds is capped at 900 (the 15-minute promise), and the error names the field', () => {
  assert.equal(resolveConfig({ auth: { maxTokenLifetimeSeconds: 900 } }).auth.maxTokenLifetimeSeconds, 900);
  for (const v of [901, 3600, 86400]) {
    assert.throws(() => resolveConfig({ auth: { maxTokenLifetimeSeconds: v } }), /\/auth\/maxTokenLifetimeSeconds/);
  }
});

test('a config file must say whether the node runs a dev issuer; no file at all is a development node', (t) => {
  assert.equal(loadConfigFile(undefined).auth.devIssuer, true);
  for (const content of [{}, { auth: {} }, { auth: { issuers: [] } }, { stateDir: '/tmp/x' }]) {
    assert.throws(
      () => loadConfigFile(file(t, content)),
      (err: Error) => err.message.startsWith('configuration /auth/devIssuer: must be set'),
      JSON.stringify(content),
    );
  }
  assert.equal(loadConfigFile(file(t, { auth: { devIssuer: false } })).auth.devIssuer, false);
  assert.equal(loadConfigFile(file(t, { auth: { devIssuer: true } })).auth.devIssuer, true);
  assert.throws(() => loadConfigFile(file(t, { auth: { devIssuer: 'yes' } })), /\/auth\/devIssuer/);
});

test('a dev issuer on a non-loopback address warns; on loopback or without a dev issuer it does not', () => {
  const at = (host: string, devIssuer = true) =>
    configWarnings(resolveConfig({ listen: { host, port: 8443 }, auth: { devIssuer } }));
  for (const host of ['0.0.0.0', '::', '10.0.0.5', 'node.example', '128.0.0.1']) {
    const w = at(host);
    assert.equal(w.length, 1, host);
    assert.match(w[0]!, /development issuer/);
    assert.match(w[0]!, /auth\.devIssuer/);
  }
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.deepEqual(at(host), []);
  assert.deepEqual(at('0.0.0.0', false), []);
});

test('an issuer needs exactly one of jwks and jwksUri; caFile goes with jwksUri; typ is a string', () => {
  const issuers = (i: Record<string, unknown>) => ({ auth: { issuers: [{ issuer: 'https://idp', ...i }] } });
  assert.throws(() => resolveConfig(issuers({})), /\/auth\/issuers\/0: needs exactly one of jwks and jwksUri/);
  assert.throws(
    () => resolveConfig(issuers({ jwks: JWKS, jwksUri: 'https://idp/jwks' })),
    /\/auth\/issuers\/0: needs exactly one/,
  );
  assert.throws(() => resolveConfig(issuers({ jwks: JWKS, caFile: '/ca.pem' })), /\/auth\/issuers\/0\/caFile/);
  assert.throws(() => resolveConfig(issuers({ jwksUri: 'http://idp/jwks' })), /\/auth\/issuers\/0\/jwksUri/);
  assert.throws(() => resolveConfig(issuers({ jwks: JWKS, tokenType: 7 })), /\/auth\/issuers\/0\/tokenType/);
  const ok = resolveConfig(issuers({ jwksUri: 'https://idp/jwks', caFile: '/ca.pem', tokenType: 'JWT' }));
  assert.equal(ok.auth.issuers[0]!.tokenType, 'JWT');
  assert.deepEqual(ok.auth.remoteKeys, { refreshSeconds: 300, cooldownSeconds: 30, maxStaleSeconds: 3600 });
  assert.throws(
    () => resolveConfig({ auth: { remoteKeys: { cooldownSeconds: 0 } } }),
    /\/auth\/remoteKeys\/cooldownSeconds/,
  );
});

test("the spaces' network policy: by default nothing but the internet, every value checked with its field", () => {
  const d = resolveConfig({}).workloads.network;
  for (const net of [
    '10.0.0.0/8',
    '127.0.0.0/8',
    '169.254.0.0/16',
    '172.16.0.0/12',
    '192.168.0.0/16',
    '168.63.129.16/32',
  ])
    assert.ok(d.denied.includes(net), net);
  assert.deepEqual(d.dns, []);
  assert.equal(d.egressBytesPerSecond, undefined);
  const set = (network: Record<string, unknown>) => resolveConfig({ workloads: { network } });
  assert.deepEqual(set({ dns: ['9.9.9.9'] }).workloads.network.dns, ['9.9.9.9']);
  assert.throws(() => set({ dns: ['999.1.1.1'] }), /\/workloads\/network\/dns\/0/);
  assert.throws(() => set({ denied: ['10.0.0.0/40'] }), /\/workloads\/network\/denied\/0/);
  assert.throws(() => set({ denied: ['example.com'] }), /\/workloads\/network\/denied\/0/);
  assert.throws(() => set({ egressBytesPerSecond: 10 }), /\/workloads\/network\/egressBytesPerSecond/);
  assert.deepEqual(d.maxConnections, { outbound: 4096, inbound: 4096 });
  assert.deepEqual(set({ maxConnections: { inbound: 100 } }).workloads.network.maxConnections, {
    outbound: 4096,
    inbound: 100,
  });
  assert.throws(() => set({ maxConnections: { outbound: 0 } }), /\/workloads\/network\/maxConnections\/outbound/);
  assert.throws(() => set({ maxConnections: { inbound: 1.5 } }), /\/workloads\/network\/maxConnections\/inbound/);
});

test("a ports range that holds the daemon's own port refuses the start, naming both", () => {
  const cfg = (port: number, first: number, last: number) =>
    resolveConfig({ listen: { port }, workloads: { network: { ports: { first, last } } } });
  assert.throws(
    () => cfg(18_843, 18_800, 18_899),
    /\/workloads\/network\/ports: 18800-18899 holds the daemon's own port \(listen\.port 18843\)/,
  );
  assert.throws(() => cfg(30_000, 30_000, 30_999), /listen\.port 30000/);
  assert.throws(() => cfg(30_999, 30_000, 30_999), /listen\.port 30999/);
  assert.equal(cfg(8443, 30_000, 30_999).listen.port, 8443);
  assert.equal(cfg(29_999, 30_000, 30_999).listen.port, 29_999);
});
