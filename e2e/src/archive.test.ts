/**
 * A space's archive (backup), end to end against the real kernel: the owner takes a locked
 * space's storage out as one stream; what arrives is the image exactly as it lies on disk, and
 * nothing in it opens the data.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  ArchiveReader,
  archiveSigningInput,
  generatePrivateKey,
  isOcsError,
  unwrapKey,
  verifyEd25519,
  type Space,
} from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';
import { saveArchive } from '@ocs/client';
import { startTestNode, reserveOwned, MiB, type TestNode, lockSpace } from './harness.js';

let t: TestNode;
let dir: string;
before(async () => {
  t = await startTestNode();
  dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-archive-'));
});
after(async () => {
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const resources = { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes: 96 * MiB, pids: 256 };

test('a locked space exports as its image, byte for byte, signed by its owner; no marker and no key in it', async () => {
  const { owner, space, wrappedKey, api, base } = await reserveOwned(t, resources, ['spaces', 'storage']);
  const volume = await api.call<{ id: string }>('POST', `${base}/volumes`, { name: 'data', sizeBytes: 16 * MiB });
  const info = await t.storage.info(space.id);
  const marker = `OCS-ARCHIVE-MARKER-${space.id}`;
  writeFileSync(join(info.mountpoint, 'marker.txt'), marker.repeat(100));
  writeFileSync(join(t.config.storage.root, 'mnt', space.id, 'volumes', volume.body.id, 'marker.txt'), marker);
  execFileSync('sync');

  // A running space is not copied: its storage is copied only at rest.
  const live = await api.send('GET', `/v1/spaces/${space.id}/archive`);
  assert.equal(live.status, 409);
  assert.equal((live.body as { error: { code: string } }).error.code, 'space_unlocked');

  await lockSpace(api, space.id);
  const stream = await api.spaces.export(space.id);
  // While the archive is read, the space stays as it is: an unlock is refused, not raced.
  const key = await unwrapKey(wrappedKey, owner);
  const during = await api.send('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  assert.equal(during.status, 409, JSON.stringify(during.body));
  assert.equal((during.body as { error: { code: string } }).error.code, 'conflict');

  const file = join(dir, `${space.id}.ocsa`);
  const saved = await saveArchive(stream, file, owner);
  const bytes = readFileSync(file);

  // Read back: every chunk checks, and the chunks rebuild the image file exactly.
  const reader = new ArchiveReader(nativeHashes);
  const imagePath = join(t.config.storage.root, 'images', `${space.id}.img`);
  const onDisk = readFileSync(imagePath);
  const rebuilt = Buffer.alloc(onDisk.length);
  for (const c of reader.push(bytes)) Buffer.from(c.data).copy(rebuilt, c.offset);
  const summary = reader.finish();
  assert.equal(summary.head.spaceId, space.id);
  assert.equal(summary.head.ownerKey, owner.publicKey.toBase64url());
  assert.equal(summary.head.backend, 'fscrypt');
  assert.deepEqual(
    summary.head.workloads.map((w) => [w.id, w.kind, w.name, w.storageBytes]),
    [[volume.body.id, 'volume', 'data', 16 * MiB]],
  );
  assert.equal(summary.head.image.bytes, onDisk.length);
  // Where it sat, for a node restoring it to map its ids from.
  const row = t.node.repo.get(space.id)!;
  assert.equal(summary.head.placement.uid, row.uid);
  assert.equal(summary.head.placement.workloadUid, row.uid + t.config.spaces.uidCount);
  assert.equal(
    createHash('sha256').update(rebuilt).digest('hex'),
    createHash('sha256').update(onDisk).digest('hex'),
    'the archive holds the image as it lies on disk',
  );
  assert.ok(saved.bytes < onDisk.length, `sparse: ${saved.bytes} bytes for a ${onDisk.length}-byte image`);

  // Signed by the owner, over the head and the tail.
  assert.equal(summary.signatures.length, 1);
  const sig = summary.signatures[0]!;
  assert.equal(sig.publicKey, owner.publicKey.toBase64url());
  const input = archiveSigningInput(summary.headBytes, summary.tailBytes, nativeHashes);
  assert.ok(verifyEd25519(Buffer.from(sig.signature, 'base64url'), input, owner.publicKey));
  assert.equal(verifyEd25519(Buffer.from(sig.signature, 'base64url'), input, generatePrivateKey().publicKey), false);

  // Nothing in it opens the data: no marker (space or volume), no space key in any spelling.
  for (const needle of [
    Buffer.from(marker),
    Buffer.from(key),
    Buffer.from(Buffer.from(key).toString('hex')),
    Buffer.from(Buffer.from(key).toString('base64')),
  ])
    assert.equal(bytes.includes(needle), false, 'found in the archive');

  // After the export the space unlocks as before, its data whole.
  const unlocked = await api.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  assert.equal(unlocked.body.state, 'active');
  const mp = (await t.storage.info(space.id)).mountpoint;
  assert.equal(readFileSync(join(mp, 'marker.txt'), 'utf8'), marker.repeat(100));
  const audit = await t
    .client({ roles: ['farmer'] })
    .call<{ entries: { action: string; target?: string; outcome: string }[] }>('GET', '/v1/audit?limit=1000');
  assert.ok(audit.body.entries.some((e) => e.action === 'space.export' && e.target === space.id && e.outcome === 'ok'));
});

test("another key's signature is not the owner's: the archive is refused before a byte is read", async () => {
  const { space, api } = await reserveOwned(t, resources, ['spaces', 'storage']);
  await lockSpace(api, space.id);
  const other = t.client({ roles: ['spaces', 'storage'], owner: generatePrivateKey() });
  await assert.rejects(other.spaces.export(space.id), (e: unknown) => isOcsError(e) && e.code === 'not_owner');
});

test('a download cut short leaves no file under its name, and the space can be unlocked again', async () => {
  const { owner, space, wrappedKey, api } = await reserveOwned(t, resources, ['spaces', 'storage']);
  await lockSpace(api, space.id);
  const stream = await api.spaces.export(space.id);
  const file = join(dir, `${space.id}-cut.ocsa`);
  // The connection drops after 64 KiB: the iterator's end destroys the response, and its socket.
  async function* cut() {
    let seen = 0;
    for await (const b of stream) {
      seen += (b as Buffer).length;
      if (seen > 64 * 1024) throw new Error('connection cut');
      yield b as Buffer;
    }
  }
  await assert.rejects(saveArchive(Readable.from(cut()), file, owner), /connection cut/);
  assert.throws(() => readFileSync(file), /ENOENT/);
  assert.throws(() => readFileSync(`${file}.partial`), /ENOENT/);
  // The export ended with the stream: the space opens again.
  const key = await unwrapKey(wrappedKey, owner);
  for (let i = 0; ; i++) {
    const r = await api.send('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
    if (r.status === 200) break;
    assert.ok(i < 50, `still refused: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
});
