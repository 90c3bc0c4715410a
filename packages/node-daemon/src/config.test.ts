import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from './config.js';

const JWKS = { keys: [{ kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', kid: 'k' }] };

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
