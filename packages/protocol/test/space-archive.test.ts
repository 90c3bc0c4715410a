import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ArchiveReader,
  ArchiveWriter,
  concatBytes,
  isOcsError,
  nobleHashes,
  signatureFrame,
  type ArchiveChunk,
  type ArchiveHead,
} from '@ocs/protocol';

const CHUNK = 64 * 1024;

function head(bytes: number): ArchiveHead {
  return {
    format: 1,
    spaceId: `sp_${'a'.repeat(20)}`,
    ownerKey: 'A'.repeat(43),
    backend: 'fscrypt',
    node: { fingerprint: 'AB:CD' },
    resources: { cpuMillicores: 100, memoryBytes: 16 * 1024 * 1024, storageBytes: bytes },
    workloads: [],
    placement: { uid: 500_000, workloadUid: 501_000, subordinateIds: null, subnet: null },
    image: { bytes, chunkBytes: CHUNK },
    createdAt: new Date(0).toISOString(),
  };
}

/** An image of 5 chunks, the second all zeros (left out), the last short. */
function image(): Uint8Array {
  const img = new Uint8Array(4 * CHUNK + 1000);
  for (let i = 0; i < img.length; i++) img[i] = (i * 131 + 7) & 0xff;
  img.fill(0, CHUNK, 2 * CHUNK);
  return img;
}

function archive(img: Uint8Array): { bytes: Uint8Array; frames: number } {
  const w = new ArchiveWriter(nobleHashes);
  const parts = [w.start(head(img.length))];
  for (let at = 0; at < img.length; at += CHUNK) {
    const f = w.chunk(at, img.subarray(at, at + CHUNK));
    if (f) parts.push(f);
  }
  parts.push(w.end().frame);
  return { bytes: concatBytes(...parts), frames: parts.length };
}

/** Reads `bytes` in pieces of `step`, rebuilding the image from its chunks. */
function read(bytes: Uint8Array, size: number, step = 7777) {
  const r = new ArchiveReader(nobleHashes);
  const out = new Uint8Array(size);
  const chunks: ArchiveChunk[] = [];
  for (let at = 0; at < bytes.length; at += step) chunks.push(...r.push(bytes.slice(at, at + step)));
  for (const c of chunks) out.set(c.data, c.offset);
  return { summary: r.finish(), out, chunks };
}

function refusedAs(code: string, f: () => unknown) {
  assert.throws(f, (e: unknown) => isOcsError(e) && e.code === code, `expected ${code}`);
}

test('an archive read back in pieces of any size gives the image, its zero chunk left out', () => {
  const img = image();
  const { bytes } = archive(img);
  for (const step of [1, 13, 4096, 1 << 20]) {
    const { summary, out, chunks } = read(bytes, img.length, step);
    assert.deepEqual(out, img);
    assert.equal(chunks.length, 4, 'the chunk of zeros is not sent');
    assert.equal(summary.tail.chunks, 4);
    assert.equal(summary.head.spaceId, `sp_${'a'.repeat(20)}`);
  }
  assert.ok(bytes.length < img.length, 'smaller than the image: zeros are not sent');
});

test('each way an archive is wrong is refused with its code', () => {
  const img = image();
  const { bytes } = archive(img);
  // Truncated anywhere: before the tail, or inside a frame.
  refusedAs('archive_malformed', () => read(bytes.subarray(0, bytes.length - 3), img.length));
  refusedAs('archive_malformed', () => read(bytes.subarray(0, bytes.length >> 1), img.length));
  // One byte of data altered: its chunk no longer matches its digest.
  const flipped = bytes.slice();
  flipped[bytes.length >> 1]! ^= 1;
  refusedAs('archive_corrupt', () => read(flipped, img.length));
  // Not an archive, or a format this version does not read.
  refusedAs('archive_malformed', () => read(new TextEncoder().encode('PK\x03\x04 a zip file'), 0));
  const v2 = bytes.slice();
  v2[4] = 2;
  refusedAs('archive_version', () => read(v2, img.length));
  // A data frame dropped: the tail's count and chain say so.
  const w = new ArchiveWriter(nobleHashes);
  const start = w.start(head(img.length));
  const f0 = w.chunk(0, img.subarray(0, CHUNK))!;
  w.chunk(2 * CHUNK, img.subarray(2 * CHUNK, 3 * CHUNK));
  const t = w.end().frame;
  refusedAs('archive_corrupt', () => read(concatBytes(start, f0, t), img.length));
  // A data frame repeated: out of place.
  refusedAs('archive_corrupt', () => read(concatBytes(start, f0, f0, t), img.length));
  // A signature before the tail, and an unknown frame.
  refusedAs('archive_malformed', () =>
    read(concatBytes(start, signatureFrame({ by: 'owner', publicKey: 'k', signature: 's' })), img.length),
  );
  refusedAs('archive_malformed', () => read(concatBytes(start, new Uint8Array([0x58, 0, 0, 0, 0])), img.length));
  // A head outside its schema (it is a node's input): an id that is no id, a field too many.
  for (const bad of [
    { ...head(img.length), placement: { ...head(img.length).placement, uid: -1 } },
    { ...head(img.length), spaceId: '../../etc' },
    { ...head(img.length), extra: true },
    // A seed's base or an increment's is a snapshot guid, a number: nothing else reaches `zfs`.
    { ...head(img.length), image: { bytes: img.length, chunkBytes: CHUNK, since: '@ocs-seed' } },
    {
      ...head(img.length),
      image: { bytes: img.length, chunkBytes: CHUNK, seed: { base: '1', dataset: '.', extra: 1 } },
    },
    // A seed's dataset is one of a space's, by a name that cannot climb out of it.
    ...['', '..', 'data/../../x', 'volumes/', 'volumes/a/b', 'other', '/data'].map((dataset) => ({
      ...head(img.length),
      image: { bytes: img.length, chunkBytes: CHUNK, seed: { base: '1', dataset } },
    })),
    {
      ...head(img.length),
      image: { bytes: img.length, chunkBytes: CHUNK, seed: { base: '1', dataset: 'data', resume: false } },
    },
    { ...head(img.length), delegation: 'x'.repeat(8193) },
  ])
    refusedAs('archive_malformed', () =>
      new ArchiveReader(nobleHashes).push(new ArchiveWriter(nobleHashes).start(bad as ArchiveHead)),
    );
});

test('a frame length over its limit is refused before it is buffered', () => {
  const { bytes } = archive(image());
  const headEnd = 5 + 5 + new DataView(bytes.buffer, 6, 4).getUint32(0);
  const huge = bytes.slice(0, headEnd + 5);
  huge[headEnd] = 'D'.charCodeAt(0);
  new DataView(huge.buffer).setUint32(headEnd + 1, 0xffffffff);
  const r = new ArchiveReader(nobleHashes);
  refusedAs('archive_malformed', () => r.push(huge));
});

test("a ZFS send stream's chunks all go out, zeros too, and any gap in it is refused", () => {
  const img = image(); // its second chunk is zeros: part of a stream, not a hole
  const zfs = (bytes: number): ArchiveHead => ({ ...head(bytes), backend: 'zfs' });
  const w = new ArchiveWriter(nobleHashes);
  const parts = [w.start(zfs(2 * img.length))]; // a bound, not the stream's length
  for (let at = 0; at < img.length; at += CHUNK) parts.push(w.chunk(at, img.subarray(at, at + CHUNK))!);
  assert.ok(parts.every(Boolean), 'no chunk is left out');
  parts.push(w.end().frame);
  const { out, chunks, summary } = read(concatBytes(...parts), 2 * img.length);
  assert.equal(chunks.length, 5);
  assert.equal(summary.tail.dataBytes, img.length, "the tail says the stream's length");
  assert.deepEqual(out.subarray(0, img.length), img);
  // The chunk of zeros left out (as a file's image would): a gap, refused.
  const g = new ArchiveWriter(nobleHashes);
  const gap = [g.start(head(img.length)), g.chunk(0, img.subarray(0, CHUNK))!];
  g.chunk(CHUNK, img.subarray(CHUNK, 2 * CHUNK)); // zeros: a fscrypt writer drops it
  gap.push(g.chunk(2 * CHUNK, img.subarray(2 * CHUNK, 3 * CHUNK))!, g.end().frame);
  const asZfs = (bytes: Uint8Array) => {
    // The same frames under a zfs head of the same size: only the head's backend differs.
    const h = new TextEncoder().encode(JSON.stringify(zfs(img.length)));
    const frame = new Uint8Array(5 + h.length);
    frame[0] = 0x48;
    new DataView(frame.buffer).setUint32(1, h.length);
    frame.set(h, 5);
    const oldHead = 5 + 5 + new DataView(bytes.buffer, bytes.byteOffset + 6, 4).getUint32(0);
    return concatBytes(bytes.subarray(0, 5), frame, bytes.subarray(oldHead));
  };
  read(concatBytes(...gap), img.length); // fine as a file's image
  refusedAs('archive_corrupt', () => read(asZfs(concatBytes(...gap)), img.length));
});
