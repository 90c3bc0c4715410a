/**
 * Restoring a space archive, end to end against the real kernel: a backup comes back on a node
 * as a new space (a fork) that opens with the owner's same key, whose files belong to ids of its
 * own; and every way an archive can be wrong is refused with its code, leaving nothing behind.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chownSync,
  createReadStream,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARCHIVE_HEAD_HEADER,
  ARCHIVE_MAGIC,
  ARCHIVE_MEDIA_TYPE,
  archiveHeadDigest,
  nodeRoute,
  ArchiveReader,
  ArchiveWriter,
  archiveSigningInput,
  concatBytes,
  generatePrivateKey,
  isOcsError,
  signatureFrame,
  unwrapKey,
  type ArchiveChunk,
  type ArchiveHead,
  type Ed25519PrivateKey,
  type Space,
} from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';
import { saveArchive, type OcsClient } from '@ocs/client';
import { startTestNode, reserveOwned, MiB, type TestNode, ownersUnder, lockSpace } from './harness.js';

let t: TestNode;
let dir: string;
before(async () => {
  t = await startTestNode();
  dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-restore-'));
});
after(async () => {
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const resources = { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes: 96 * MiB, pids: 256 };
const SUBID_SIZE = 65_536;

/** A locked space's archive saved by its owner, as `ocs space backup` leaves it. */
async function backup(api: OcsClient, spaceId: string, owner: Ed25519PrivateKey, name = spaceId): Promise<string> {
  await lockSpace(api, spaceId);
  const file = join(dir, `${name}.ocsa`);
  await saveArchive(await api.spaces.export(spaceId), file, owner);
  return file;
}

test('a backup restores as a locked fork that opens with the same key, its files owned by ids of its own', async () => {
  const { owner, space, wrappedKey, api, base } = await reserveOwned(t, resources, ['spaces', 'storage', 'vms']);
  const upload = await api.call<{ sha256: string }>('POST', `${base}/files/notes.txt`, undefined, {
    raw: new TextEncoder().encode('OCS-RESTORE-MARKER in a file the space process keeps'),
  });
  const volume = await api.call<{ id: string }>('POST', `${base}/volumes`, { name: 'data', sizeBytes: 16 * MiB });
  const row = t.node.repo.get(space.id)!;
  const oldSubids = t.node.repo.workloadIds(space.id, {
    idMap: { base: t.config.workloads.containers.subidBase + 3 * SUBID_SIZE, size: SUBID_SIZE },
    subnet: '10.254.254.0/26',
  }).idMap;
  // What a container and QEMU would have left in the volume: files of the space's subordinate
  // ids and of its QEMU uid.
  const volDir = join(t.config.storage.root, 'mnt', space.id, 'volumes', volume.body.id);
  writeFileSync(join(volDir, 'by-container'), 'OCS-RESTORE-MARKER volume');
  chownSync(join(volDir, 'by-container'), oldSubids.base + 1000, oldSubids.base + 1000);
  writeFileSync(join(volDir, 'by-qemu'), 'disk');
  chownSync(join(volDir, 'by-qemu'), row.uid + t.config.spaces.uidCount, row.uid + t.config.spaces.uidCount);
  execFileSync('sync');

  const file = await backup(api, space.id, owner);
  const restored = await api.spaces.restore(file, { leaseSeconds: 3600, name: 'fork' });
  assert.notEqual(restored.id, space.id, 'a restore is a new space: a fork');
  assert.equal(restored.state, 'locked');
  assert.equal(restored.ownerKey, space.ownerKey);
  assert.deepEqual(restored.resources, space.resources);
  const fork = t.node.repo.get(restored.id)!;
  assert.notEqual(fork.uid, row.uid);
  assert.deepEqual(fork.remapFrom?.placement.uid, row.uid);

  // Locked, it cannot be unlocked by another key's owner; with the owner's own key it opens.
  const key = await unwrapKey(wrappedKey, owner);
  const opened = await api.call<Space>('POST', `/v1/spaces/${restored.id}/unlock`, { sealedKey: await t.seal(key) });
  assert.equal(opened.body.state, 'active');
  assert.equal(t.node.repo.get(restored.id)!.remapFrom, null);

  // Its space process reads its own records (written by the old uid): the upload is there.
  const files = await api.call<{ files: { name: string; sha256: string }[] }>(
    'GET',
    `/v1/spaces/${restored.id}/api/files`,
  );
  assert.deepEqual(
    files.body.files.map((f) => [f.name, f.sha256]),
    [['notes.txt', upload.body.sha256]],
  );
  const volumes = await api.call<{ volumes: { id: string; name: string; unlocked: boolean }[] }>(
    'GET',
    `/v1/spaces/${restored.id}/api/volumes`,
  );
  // A fork's workloads get ids of their own: the archived space may still be on this node.
  assert.deepEqual(
    volumes.body.volumes.map((v) => [v.name, v.unlocked]),
    [['data', true]],
  );
  const forkVolume = volumes.body.volumes[0]!.id;
  assert.notEqual(forkVolume, volume.body.id);
  const forkVol = join(t.config.storage.root, 'mnt', restored.id, 'volumes', forkVolume);
  assert.equal(readFileSync(join(forkVol, 'by-container'), 'utf8'), 'OCS-RESTORE-MARKER volume');

  // Its files belong to its own ids, at the same place in its ranges; none to the old ones.
  const newSubids = t.node.repo.workloadIds(restored.id, { idMap: { base: -1, size: SUBID_SIZE }, subnet: 'x' }).idMap;
  assert.notEqual(newSubids.base, oldSubids.base);
  assert.equal(lstatSync(join(forkVol, 'by-container')).uid, newSubids.base + 1000);
  assert.equal(lstatSync(join(forkVol, 'by-qemu')).uid, fork.uid + t.config.spaces.uidCount);
  const seen = ownersUnder(join(t.config.storage.root, 'mnt', restored.id));
  for (const old of [row.uid, row.uid + t.config.spaces.uidCount, oldSubids.base + 1000])
    assert.equal(seen.has(old), false, `an id of the archived space (${old}) still owns a file`);
  assert.ok(seen.has(fork.uid), 'the space process owns its home');

  // The original is untouched: it opens too, as it was.
  const again = await api.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  assert.equal(again.body.state, 'active');
  assert.equal(lstatSync(join(volDir, 'by-container')).uid, oldSubids.base + 1000);

  const audit = await t
    .client({ roles: ['farmer'] })
    .call<{ entries: { action: string; target?: string; outcome: string }[] }>('GET', '/v1/audit?limit=1000');
  assert.ok(
    audit.body.entries.some((e) => e.action === 'space.restore' && e.target === restored.id && e.outcome === 'ok'),
  );
});

/** An archive's parts, to put together again altered. */
function parts(file: string): { head: ArchiveHead; chunks: ArchiveChunk[]; signature: Uint8Array } {
  const reader = new ArchiveReader(nativeHashes);
  const chunks = reader.push(readFileSync(file)).map((c) => ({ offset: c.offset, data: new Uint8Array(c.data) }));
  const summary = reader.finish();
  return { head: summary.head, chunks, signature: signatureFrame(summary.signatures[0]!) };
}

/** An archive of `head` and `chunks`, signed by `signer` (none: unsigned). */
function build(head: ArchiveHead, chunks: ArchiveChunk[], signer: Ed25519PrivateKey | null): Uint8Array {
  const w = new ArchiveWriter(nativeHashes);
  const out = [w.start(head)];
  for (const c of chunks) {
    const f = w.chunk(c.offset, c.data);
    if (f) out.push(f);
  }
  const end = w.end();
  out.push(end.frame);
  if (signer) {
    const sig = signer.sign(archiveSigningInput(w.headBytes, end.tailBytes, nativeHashes));
    out.push(
      signatureFrame({
        by: 'owner',
        publicKey: signer.publicKey.toBase64url(),
        signature: Buffer.from(sig).toString('base64url'),
      }),
    );
  }
  return concatBytes(...out);
}

test('each wrong archive is refused with its code, and leaves nothing on the node', async () => {
  const { owner, space, api } = await reserveOwned(t, resources, ['spaces', 'storage']);
  const file = await backup(api, space.id, owner, `${space.id}-src`);
  const good = readFileSync(file);
  const { head, chunks, signature } = parts(file);
  const stranger = generatePrivateKey();
  const images = () => readdirSync(join(t.config.storage.root, 'images')).sort();
  const standing = () =>
    t.node.repo
      .list({})
      .filter((r) => r.state !== 'destroyed')
      .map((r) => r.id)
      .sort();
  const before = { images: images(), spaces: standing() };

  // A filesystem image crafted to be corrupt: its group descriptors overwritten, every digest
  // and the owner's signature correct.
  const first = chunks[0]!;
  const crafted = new Uint8Array(first.data); // a copy (Buffer's slice would be a view)
  crafted.fill(0xa5, 4096, 4096 * 4);
  const cases: [string, Uint8Array, string, OcsClient?][] = [
    ['truncated', good.subarray(0, Math.floor(good.length / 2)), 'archive_malformed'],
    [
      'one byte altered',
      (() => {
        const b = Buffer.from(good);
        const at = b.length - 300_000;
        b[at] = b[at]! ^ 1;
        return b;
      })(),
      'archive_corrupt',
    ],
    ['a later format', concatBytes(ARCHIVE_MAGIC, new Uint8Array([2]), good.subarray(5)), 'archive_version'],
    ['unsigned', build(head, chunks, null), 'archive_signature_invalid'],
    ['signed by another key', build(head, chunks, stranger), 'archive_signature_invalid'],
    [
      'head altered after signing',
      // The owner's signature of the real head and tail, on an archive whose head says more.
      concatBytes(build({ ...head, resources: { ...head.resources, cpuMillicores: 400 } }, chunks, null), signature),
      'archive_signature_invalid',
    ],
    ['another backend', build({ ...head, backend: 'zfs' }, chunks, owner), 'archive_backend'],
    // A move's seed or increment (ZFS only, node to node) is never a backup.
    [
      "a move's seed",
      build({ ...head, image: { ...head.image, seed: { base: '123', dataset: '.' } } }, chunks, owner),
      'archive_malformed',
    ],
    [
      "a move's increment",
      build({ ...head, image: { ...head.image, since: '123' } }, chunks, owner),
      'archive_malformed',
    ],
    [
      'workloads larger than the space',
      build(
        {
          ...head,
          workloads: [
            {
              id: 'vol_aaaaaaaaaaaaaaaaaaaa',
              kind: 'volume',
              name: 'huge',
              cpuMillicores: 0,
              memoryBytes: 0,
              storageBytes: head.resources.storageBytes + 1,
              pids: 0,
            },
          ],
        },
        chunks,
        owner,
      ),
      'archive_malformed',
    ],
    // Ids it had where it was made that are this node's ids too (two nodes' uid ranges set
    // apart by less than their size): its files' owners could not be told apart at unlock.
    [
      "ids that overlap this node's",
      build(
        {
          ...head,
          placement: {
            ...head.placement,
            subordinateIds: { base: (t.config.spaces as { uidBase: number }).uidBase, size: 4000 },
          },
        },
        chunks,
        owner,
      ),
      'conflict',
    ],
    [
      'a corrupt filesystem',
      build(head, [{ offset: first.offset, data: crafted }, ...chunks.slice(1)], owner),
      'archive_filesystem_invalid',
    ],
    // The request must be signed by the key the archive binds: another owner cannot restore it.
    ['restored by another owner', good, 'not_owner', t.client({ roles: ['spaces'], owner: stranger })],
  ];
  for (const [what, bytes, code, client] of cases) {
    const f = join(dir, `bad-${what.replace(/\W+/g, '-')}.ocsa`);
    writeFileSync(f, bytes);
    await assert.rejects(
      (client ?? api).spaces.restore(f, { leaseSeconds: 3600 }),
      (e: unknown) => isOcsError(e) && e.code === code,
      what,
    );
    assert.deepEqual(images(), before.images, `${what}: no image is left`);
    assert.deepEqual(standing(), before.spaces, `${what}: no space is left`);
  }
  // The request is bound to the archive it carries: a request signed for another head, or for
  // none (neither its head's digest nor a Content-Digest), is refused before anything is made.
  const sendGood = (headers: Record<string, string>) =>
    api.route(
      nodeRoute('restoreSpace'),
      { query: { leaseSeconds: 3600 }, body: () => createReadStream(file), headers },
      { contentType: ARCHIVE_MEDIA_TYPE },
    );
  const size = String(good.length);
  const otherHead = new TextEncoder().encode(JSON.stringify({ ...head, createdAt: new Date(0).toISOString() }));
  for (const [what, headers, code] of [
    [
      'signed for another head',
      { [ARCHIVE_HEAD_HEADER]: archiveHeadDigest(otherHead, nativeHashes), 'content-length': size },
      'digest_mismatch',
    ],
    ['bound to nothing', { 'content-length': size }, 'digest_missing'],
  ] as const) {
    await assert.rejects(sendGood(headers), (e: unknown) => isOcsError(e) && e.code === code, what);
    assert.deepEqual(images(), before.images, `${what}: no image is left`);
    assert.deepEqual(standing(), before.spaces, `${what}: no space is left`);
  }
  // Nothing of them is left in the kernel either: no cgroup of a space the node does not know.
  const parent = t.config.cgroups.parent;
  const known = new Set(
    t.node.repo
      .list({})
      .filter((r) => r.state !== 'destroyed')
      .map((r) => r.id),
  );
  for (const ctrl of ['memory', 'cpu', 'pids']) {
    const p = join('/sys/fs/cgroup', ctrl, parent);
    let names: string[] = [];
    try {
      names = readdirSync(p).filter((n) => n.startsWith('sp_'));
    } catch {
      continue;
    }
    for (const n of names) assert.ok(known.has(n.split('.')[0]!), `${ctrl}: ${n} is left`);
  }
  // Refusals are in the audit log, with their codes.
  const audit = await t
    .client({ roles: ['farmer'] })
    .call<{ entries: { action: string; outcome: string; code?: string }[] }>('GET', '/v1/audit?limit=1000');
  const refused = audit.body.entries.filter((e) => e.action === 'space.restore' && e.outcome === 'refused');
  assert.ok(refused.some((e) => e.code === 'archive_filesystem_invalid'));
});
