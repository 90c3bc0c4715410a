import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { contentDigest } from '@ocs/protocol';
import { nativeHashes } from './crypto.js';
import { publishUpload, receiveUpload } from './uploads.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest();

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-upload-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const chunks = (b: Buffer) => Readable.from([b.subarray(0, 1000), b.subarray(1000)]);

test('an upload is hashed as it streams; a wrong digest, a missing one or an oversize body leaves nothing', async (t) => {
  const dir = scratch(t);
  const body = randomBytes(5000);
  const digest = contentDigest(body, 'sha-256', nativeHashes);
  const up = await receiveUpload(chunks(body), { dir, contentDigest: digest, maxBytes: 10_000, hashes: nativeHashes });
  assert.equal(up.sizeBytes, 5000);
  assert.equal(up.sha256, sha(body).toString('hex'));
  assert.ok(readFileSync(join(dir, up.spoolName)).equals(body));
  rmSync(join(dir, up.spoolName));

  const other = contentDigest(randomBytes(5000), 'sha-256', nativeHashes);
  for (const [opts, code] of [
    [{ contentDigest: other, maxBytes: 10_000 }, 'digest_mismatch'],
    [{ contentDigest: undefined, maxBytes: 10_000 }, 'digest_missing'],
    [{ contentDigest: 'sha-256=:bm90IGEgZGlnZXN0:', maxBytes: 10_000 }, 'digest_malformed'],
    [{ contentDigest: digest, maxBytes: 4999 }, 'budget_exceeded'],
  ] as const) {
    await assert.rejects(
      receiveUpload(chunks(body), { dir, hashes: nativeHashes, ...opts }),
      (e: { code?: string }) => e.code === code,
      code,
    );
    assert.deepEqual(readdirSync(dir), [], `nothing left after ${code}`);
  }
});

test('publishing never replaces a file of that name', async (t) => {
  const dir = scratch(t);
  writeFileSync(join(dir, 'kernel'), 'original');
  writeFileSync(join(dir, '.upload-0000000000000000'), 'new');
  await assert.rejects(publishUpload(dir, '.upload-0000000000000000', 'kernel'), { code: 'conflict' });
  assert.equal(readFileSync(join(dir, 'kernel'), 'utf8'), 'original');
  assert.deepEqual(readdirSync(dir), ['kernel'], 'the spool file is gone');
  writeFileSync(join(dir, '.upload-1111111111111111'), 'fresh');
  await publishUpload(dir, '.upload-1111111111111111', 'initrd');
  assert.equal(readFileSync(join(dir, 'initrd'), 'utf8'), 'fresh');
});
