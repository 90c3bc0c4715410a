/**
 * The SDK's signing and key code in a real browser (Debian's headless Chromium, driven by
 * playwright-core): a key made in the page, a reservation signed by it in the page (proof of
 * possession, Content-Digest), then a signed request to the space's own API; the node accepts
 * both, and refuses the page's signature on a request it did not sign.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { BaseClient } from '@ocs/client';
import { requireHost } from '@ocs/host/testing';
import type { CreateSpaceResponse } from '@ocs/protocol';
import { startTestNode, MiB, type TestNode } from './harness.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = requireHost(
  'chromium',
  existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium)`,
);

let t: TestNode;
let browser: Browser;
let page: Page;

before(async () => {
  if (skip) return;
  t = await startTestNode();
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL('../src/browser/sign-entry.ts', import.meta.url))],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    write: false,
    logLevel: 'warning',
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage();
  await page.setContent('<!doctype html><title>ocs</title>');
  await page.addScriptTag({ content: bundle.outputFiles[0]!.text });
});

after(async () => {
  if (skip) return;
  await browser?.close();
  await t?.stop();
});

interface PageApi {
  newKey(): { publicKey: string; fingerprint: string };
  sign(method: string, url: string, headers: Record<string, string>, body?: string): Promise<Record<string, string>>;
}
test('a key made in the browser reserves a space and signs for it; the node accepts both', { skip }, async () => {
  const ua = await page.evaluate(
    () => (globalThis as unknown as { navigator: { userAgent: string } }).navigator.userAgent,
  );
  assert.match(ua, /HeadlessChrome|Chrome/);
  const key = await page.evaluate(() => (globalThis as unknown as { ocs: PageApi }).ocs.newKey());
  const node = new BaseClient({ url: t.node.url, ca: t.node.tls.cert });
  try {
    const token = await t.token(['spaces', 'monitor']);
    const body = JSON.stringify({
      ownerKey: key.publicKey,
      resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 16 * MiB },
      leaseSeconds: 600,
    });
    const url = `${t.node.url}/v1/spaces`;
    const headers = await page.evaluate(
      ([u, h, b]) => (globalThis as unknown as { ocs: PageApi }).ocs.sign('POST', u, h, b),
      // A page does not see the certificate: it is told the node's fingerprint, as `ocs` is.
      [url, { authorization: `Bearer ${token}`, 'ocs-node': t.node.tls.fingerprint }, body] as const,
    );
    const created = await node.send('POST', '/v1/spaces', undefined, {
      sign: false,
      headers,
      raw: new TextEncoder().encode(body),
      contentType: 'application/json',
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { space } = created.body as CreateSpaceResponse;
    assert.equal(space.ownerFingerprint, key.fingerprint);

    // A signed GET on the space's own API, signed in the page.
    const statusUrl = `${t.node.url}${space.apiBase}/status`;
    const signed = await page.evaluate(([u, h]) => (globalThis as unknown as { ocs: PageApi }).ocs.sign('GET', u, h), [
      statusUrl,
      { authorization: `Bearer ${token}`, 'ocs-node': t.node.tls.fingerprint },
    ] as const);
    const status = await node.send('GET', `${space.apiBase}/status`, undefined, { sign: false, headers: signed });
    assert.equal(status.status, 200, JSON.stringify(status.body));

    // The same signature on another request is refused.
    const moved = await node.send('GET', `${space.apiBase}/volumes`, undefined, { sign: false, headers: signed });
    assert.equal(moved.status, 401);
    assert.equal((moved.body as { error: { code: string } }).error.code, 'signature_invalid');
  } finally {
    node.close();
  }
});
