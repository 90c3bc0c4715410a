/**
 * A locked space's archive as the daemon sends it (format: protocol's space-archive.ts): the
 * head (what the space is, from the daemon's records), then its image chunk by chunk as it lies
 * on disk, then the tail. Pulled, not pushed: a chunk is read only when the connection has taken
 * the one before last, so a 10 GiB space costs two 4 MiB buffers, and nothing is staged anywhere.
 */
import {
  ARCHIVE_CHUNK_BYTES,
  ARCHIVE_FORMAT,
  ArchiveWriter,
  archiveSigningInput,
  signatureFrame,
  type ArchiveHead,
  type ArchiveSignature,
  type HashFactory,
} from '@ocs/protocol';
import type { StorageImage } from '@ocs/host';
import type { SpaceRow } from '../state/index.js';
import { resourcesOf } from './service.js';

/** What an archive's head says of a space beyond its record, from the node's other records. */
export type RecordedHead = Pick<ArchiveHead, 'workloads' | 'placement' | 'published' | 'delegation'>;

export interface ArchiveSource {
  row: SpaceRow;
  image: StorageImage;
  /** A move's seed or increment (ZFS): what the head says of the image beyond its size. */
  imageHead?: Pick<ArchiveHead['image'], 'seed' | 'since'>;
  backend: ArchiveHead['backend'];
  workloads: ArchiveHead['workloads'];
  placement: ArchiveHead['placement'];
  published?: ArchiveHead['published'];
  delegation?: ArchiveHead['delegation'];
  /** The node's TLS certificate fingerprint. */
  node: string;
  now: number;
  hashes: HashFactory;
  /**
   * On a move: the source node's signature over head and tail, appended after the tail (the
   * target accepts the archive on it; an owner's backup is signed by `ocs` instead).
   */
  sign?(input: Uint8Array): ArchiveSignature;
  /** Called once, when the stream ends: `ok` when the tail went out. */
  done(ok: boolean): Promise<void>;
}

export async function* spaceArchive(s: ArchiveSource): AsyncGenerator<Uint8Array> {
  let ok = false;
  try {
    const w = new ArchiveWriter(s.hashes);
    yield w.start({
      format: ARCHIVE_FORMAT,
      spaceId: s.row.id,
      ownerKey: s.row.ownerKey,
      backend: s.backend,
      node: { fingerprint: s.node },
      resources: resourcesOf(s.row),
      workloads: s.workloads,
      placement: s.placement,
      ...(s.published?.length ? { published: s.published } : {}),
      ...(s.delegation ? { delegation: s.delegation } : {}),
      image: { bytes: s.image.bytes, chunkBytes: ARCHIVE_CHUNK_BYTES, ...s.imageHead },
      createdAt: new Date(s.now).toISOString(),
    });
    // Two buffers for the whole image, taking turns: the next chunk is read from the disk while
    // the frame of this one goes out (a frame copies what it sends).
    const bufs = [new Uint8Array(ARCHIVE_CHUNK_BYTES), new Uint8Array(ARCHIVE_CHUNK_BYTES)];
    // A file's image is read to its size; a stream's until it ends (within its bound).
    const stream = s.image.stream === true;
    const read = async (at: number, buf: Uint8Array): Promise<Uint8Array> => {
      const want = Math.min(ARCHIVE_CHUNK_BYTES, s.image.bytes - at);
      let got = 0;
      while (got < want) {
        const n = await s.image.read(buf.subarray(got, want), at + got);
        if (n === 0) {
          if (stream) break;
          throw new Error(`the image ended at ${at + got}, before its size`);
        }
        got += n;
      }
      if (stream && got === want && at + got === s.image.bytes && (await s.image.read(new Uint8Array(1), at + got)) > 0)
        throw new Error(`the send stream is longer than its bound of ${s.image.bytes} bytes`);
      return buf.subarray(0, got);
    };
    let next = s.image.bytes > 0 ? read(0, bufs[0]!) : undefined;
    for (let at = 0, turn = 0; next; at += ARCHIVE_CHUNK_BYTES, turn ^= 1) {
      const data = await next;
      if (data.length === 0) break; // a stream that ended on a chunk's boundary
      const frame = w.chunk(at, data);
      const following = at + ARCHIVE_CHUNK_BYTES;
      const more = stream
        ? data.length === ARCHIVE_CHUNK_BYTES && following < s.image.bytes
        : following < s.image.bytes;
      next = more ? read(following, bufs[turn ^ 1]!) : undefined;
      // A read already under way when the stream is cut is awaited by nobody: its failure is not one.
      next?.catch(() => undefined);
      if (frame) yield frame;
    }
    const end = w.end();
    yield end.frame;
    if (s.sign) yield signatureFrame(s.sign(archiveSigningInput(w.headBytes, end.tailBytes, s.hashes)));
    ok = true;
  } finally {
    await s.done(ok);
  }
}
