import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  UsageError,
  formatBytes,
  parseCount,
  parseCpu,
  parseDuration,
  parsePublishTarget,
  parseSize,
} from './units.js';

test('sizes: binary units, decimal units, bare bytes; anything else is a usage error', () => {
  assert.equal(parseSize('4GiB'), 4 * 1024 ** 3);
  assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
  assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('100MB'), 100_000_000);
  assert.equal(parseSize('1048576'), 1048576);
  for (const bad of ['', 'lots', '4 GiBs', '-1GiB', '1e3'])
    assert.throws(() => parseSize(bad), UsageError, JSON.stringify(bad));
});

test('CPUs and durations', () => {
  assert.equal(parseCpu('2'), 2000);
  assert.equal(parseCpu('0.5'), 500);
  assert.equal(parseCpu('250m'), 250);
  assert.throws(() => parseCpu('two'), UsageError);
  assert.equal(parseDuration('24h'), 86400);
  assert.equal(parseDuration('30m'), 1800);
  assert.equal(parseDuration('7d'), 7 * 86400);
  assert.equal(parseDuration('90'), 90);
  assert.throws(() => parseDuration('1w'), UsageError);
  assert.equal(formatBytes(512 * 1024 ** 2), '512 MiB');
});

test('counts and publish targets', () => {
  assert.equal(parseCount('2', 'x'), 2);
  for (const bad of ['', '-1', '1.5', 'two']) assert.throws(() => parseCount(bad, 'x'), UsageError, bad);
  assert.deepEqual(parsePublishTarget('web:8080'), {
    target: { kind: 'container', name: 'web' },
    port: 8080,
    protocol: 'tcp',
  });
  assert.deepEqual(parsePublishTarget('vm/db:5432/udp'), {
    target: { kind: 'vm', name: 'db' },
    port: 5432,
    protocol: 'udp',
  });
  for (const bad of ['web', 'web:0', 'web:70000', 'pod/web:80', 'Web:80', 'web:80/sctp'])
    assert.throws(() => parsePublishTarget(bad), UsageError, bad);
});

test('completion candidates come from the command tree', () => {
  const main = fileURLToPath(new URL('./main.js', import.meta.url));
  const r = spawnSync(process.execPath, [main, '__complete', 'space'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  const words = r.stdout.trim().split('\n');
  for (const w of ['reserve', 'unlock', 'destroy', '--json']) assert.ok(words.includes(w), w);
  assert.ok(!words.includes('__complete'));
  const top = spawnSync(process.execPath, [main, '__complete'], { encoding: 'utf8' }).stdout.split('\n');
  for (const w of ['space', 'lease', 'run', 'container', 'node', 'net']) assert.ok(top.includes(w), w);
});
