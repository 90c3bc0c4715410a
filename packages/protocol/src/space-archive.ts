/**
 * A space archive: a space's storage exactly as it lies on disk (ciphertext), with what a node
 * needs to know to restore it, as one stream. The format is read and written in pieces, so
 * neither end ever holds the archive in memory, and a reader checks each piece as it arrives.
 *
 * ```
 * "OCSA" 0x01                      magic and format version
 * frame*                           kind (1 byte) | length (u32 BE) | payload
 *   'H' head      JSON ArchiveHead: what the space is (first, once)
 *   'D' data      offset (u64 BE) | SHA-256 of the bytes (32) | bytes (≤ head.image.chunkBytes)
 *   'T' tail      JSON ArchiveTail: how many data frames, their bytes, one digest over them all
 *   'S' signature JSON ArchiveSignature over head and tail (the owner's, added by `ocs`; or
 *                 on a move, the source node's)
 * ```
 *
 * Data frames hold the image's chunks in increasing offsets; a chunk of zeros is left out (the
 * image is sparse: a 10 GiB space holding 100 MiB sends about 100 MiB). On ZFS the "image" is a
 * raw send stream (`zfs send -w`: the blocks as encrypted on disk), which has no holes to skip and
 * whose length is known only at its end: its chunks follow each other with no gap, and
 * `head.image.bytes` is an upper bound ({@link archiveImageBytes}). The tail's digest chains
 * every frame's offset and digest, so a frame dropped, repeated, moved or altered is found; the
 * signatures cover the head's and the tail's exact bytes, so together they cover everything.
 * Nothing here opens the data: the space key stays wrapped to its owner, outside the archive.
 */
import { Type, type Static } from '@sinclair/typebox';
import { base64 } from '@scure/base';
import { OcsError } from './errors.js';
import type { HashFactory } from './digest.js';
import { Name, Obj, Resources, SpaceId, Timestamp } from './schemas/common.js';
import { validate } from './validate.js';

export const ARCHIVE_MAGIC = new Uint8Array([0x4f, 0x43, 0x53, 0x41]); // "OCSA"
export const ARCHIVE_FORMAT = 1;
/** Media type of an archive on the wire and in files. */
export const ARCHIVE_MEDIA_TYPE = 'application/vnd.ocs.space-archive';
/** Fixed chunk size: large enough that framing and hashing cost nothing, small enough to stream. */
export const ARCHIVE_CHUNK_BYTES = 4 * 1024 * 1024;
/** A head, tail or signature frame is small JSON; anything larger is not an archive. */
const MAX_JSON_FRAME = 1024 * 1024;
const FRAME_HEADER = 5;
const DATA_PREFIX = 8 + 32;

/**
 * `head.image.bytes` of a space of `storageBytes` on `backend`: one rule for the node that writes an
 * archive and the node that reads it. fscrypt: the image file, exactly (whole 4 KiB blocks). ZFS:
 * a bound on the send stream, which holds the space's blocks (at most its quota) and a record
 * header per block and file; twice the quota and 16 MiB leave room for a space of small files.
 */
export function archiveImageBytes(backend: 'fscrypt' | 'zfs', storageBytes: number): number {
  const blocks = Math.floor(storageBytes / 4096) * 4096;
  return backend === 'zfs' ? 2 * blocks + 16 * 1024 * 1024 : blocks;
}

const Uint = (max = Number.MAX_SAFE_INTEGER) => Type.Integer({ minimum: 0, maximum: max });
const MAX_ID = 2 ** 32 - 2;

/**
 * What an archive says the space is. A node restoring an archive trusts none of it until the
 * owner's signature over it checks, and even then only as far as this schema allows: every field
 * is bounded, every object closed.
 */
/** A ZFS snapshot's guid, as `zfs get guid` prints it (a 64-bit number). */
export const SNAPSHOT_GUID = Type.String({ pattern: '^[0-9]{1,20}$' });
/** A dataset of a space, relative to it (`.` is its top), as a move's seed sends them one by one. */
export const SEED_DATASET = Type.String({ pattern: '^(\\.|data|volumes|volumes/[a-z0-9][a-z0-9_-]{0,63})$' });

export const ArchiveHead = Obj({
  format: Type.Literal(ARCHIVE_FORMAT),
  spaceId: SpaceId,
  /** base64url of the owner's Ed25519 public key: only its signature makes the archive acceptable. */
  ownerKey: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }),
  /** How the storage is encrypted: an fscrypt image restores only where spaces are fscrypt images. */
  backend: Type.Union([Type.Literal('fscrypt'), Type.Literal('zfs')]),
  /** The node it came from: its TLS certificate's fingerprint. */
  node: Obj({ fingerprint: Type.String({ maxLength: 128 }) }),
  resources: Resources,
  /** The space's workloads as the node recorded them (ids, kinds, names, shares); what they run is inside the image. */
  workloads: Type.Array(
    Obj({
      id: Type.String({ pattern: '^(vol|ctr|vm)_[a-z0-9]{20}$' }),
      kind: Type.Union([Type.Literal('volume'), Type.Literal('container'), Type.Literal('vm')]),
      name: Name,
      cpuMillicores: Uint(),
      memoryBytes: Uint(),
      storageBytes: Uint(),
      pids: Uint(),
    }),
    { maxItems: 4096 },
  ),
  /**
   * Where the space sat on its node: the ids that own its files in the image and the subnet its
   * engine's network names. A node restoring it gives it ids and a subnet of its own, and maps
   * these to them.
   */
  placement: Obj({
    uid: Uint(MAX_ID),
    workloadUid: Uint(MAX_ID),
    subordinateIds: Type.Union([
      Obj({ base: Uint(MAX_ID), size: Type.Integer({ minimum: 1, maximum: 1 << 24 }) }),
      Type.Null(),
    ]),
    subnet: Type.Union([Type.String({ pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$' }), Type.Null()]),
  }),
  /**
   * What the space published on its node: a port of a container or VM, by workload id. The node
   * restoring it publishes the same ports again, on host ports of its own range.
   */
  published: Type.Optional(
    Type.Array(
      Obj({
        workloadId: Type.String({ pattern: '^(ctr|vm)_[a-z0-9]{20}$' }),
        protocol: Type.Union([Type.Literal('tcp'), Type.Literal('udp')]),
        port: Type.Integer({ minimum: 1, maximum: 65535 }),
      }),
      { maxItems: 65535 },
    ),
  ),
  /**
   * The owner's delegation for the space (a compact JWS, delegation.ts), as its node kept it: it
   * follows the space, so a node it moves to may drain it as the owner allowed. Signed by the
   * owner's key, it is checked on its own where it arrives, and kept only if it holds there.
   */
  delegation: Type.Optional(Type.String({ maxLength: 8192 })),
  image: Obj({
    bytes: Uint(),
    chunkBytes: Type.Integer({ minimum: 4096, maximum: ARCHIVE_CHUNK_BYTES }),
    /**
     * A move's seed (ZFS only, node to node): one dataset of the space as it was while it still
     * ran (`dataset`, relative to the space: `.` is its top), which the target holds for the
     * increment that completes it; `base` names the seed. With `resume`, only the rest of a
     * dataset the target holds in part. Never a backup.
     */
    seed: Type.Optional(
      Obj({
        base: SNAPSHOT_GUID,
        dataset: SEED_DATASET,
        resume: Type.Optional(Type.Literal(true)),
      }),
    ),
    /** An increment (ZFS only, node to node): only what changed since the seed `since`, which the target holds. */
    since: Type.Optional(SNAPSHOT_GUID),
  }),
  createdAt: Timestamp,
});
export type ArchiveHead = Static<typeof ArchiveHead>;

export interface ArchiveTail {
  /** Data frames sent (chunks of zeros are left out). */
  chunks: number;
  dataBytes: number;
  /** Hex SHA-256 chained over each data frame's offset (u64 BE) and digest, in order. */
  digest: string;
}

export interface ArchiveSignature {
  /** `owner`: added by `ocs` to what it received and checked; `node`: a source node's, on a move. */
  by: 'owner' | 'node';
  /** base64url Ed25519 public key. */
  publicKey: string;
  /** base64url Ed25519 signature over {@link archiveSigningInput}. */
  signature: string;
}

/** One data chunk as a reader hands it on: where it goes in the image, and its bytes. */
export interface ArchiveChunk {
  offset: number;
  data: Uint8Array;
}

/** The `ocs-archive-head` value of a request carrying the archive whose head frame is `head`. */
export function archiveHeadDigest(head: Uint8Array, sha256: HashFactory): string {
  const h = sha256('sha-256');
  h.update(head);
  return `sha-256=:${base64.encode(h.digest())}:`;
}

/** What is signed: a domain tag, then the head's and the tail's bytes exactly as they were framed. */
export function archiveSigningInput(head: Uint8Array, tail: Uint8Array, sha256: HashFactory): Uint8Array {
  const h = sha256('sha-256');
  h.update(new TextEncoder().encode(`ocs-space-archive-v${ARCHIVE_FORMAT}\0`));
  h.update(u32(head.length));
  h.update(head);
  h.update(tail);
  return h.digest();
}

const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};
const u64 = (n: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

function frame(kind: string, ...parts: Uint8Array[]): Uint8Array {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(FRAME_HEADER + length);
  out[0] = kind.charCodeAt(0);
  new DataView(out.buffer).setUint32(1, length);
  let at = FRAME_HEADER;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const isZero = (b: Uint8Array) => {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
};

/**
 * Writes an archive: `start()` gives the magic and the head, `chunk()` one frame per image chunk
 * (none for zeros), `end()` the tail. Each returns the bytes to send, in order.
 */
export class ArchiveWriter {
  private readonly chain;
  private chunks = 0;
  private dataBytes = 0;
  private last = -1;
  /** A send stream (ZFS): every chunk goes out, zeros too, since its length is its own. */
  private stream = false;
  /** The head's framed payload, for a signature made at the end. */
  headBytes: Uint8Array = new Uint8Array();

  constructor(private readonly sha256: HashFactory) {
    this.chain = sha256('sha-256');
  }

  start(head: ArchiveHead): Uint8Array {
    this.stream = head.backend === 'zfs';
    this.headBytes = new TextEncoder().encode(JSON.stringify(head));
    const out = new Uint8Array(ARCHIVE_MAGIC.length + 1);
    out.set(ARCHIVE_MAGIC);
    out[ARCHIVE_MAGIC.length] = ARCHIVE_FORMAT;
    return concatBytes(out, frame('H', this.headBytes));
  }

  /** The frame for the chunk at `offset`, or nothing when it is all zeros. */
  chunk(offset: number, data: Uint8Array): Uint8Array | undefined {
    if (offset <= this.last) throw new Error('chunks go in increasing offsets');
    this.last = offset;
    if (!this.stream && isZero(data)) return undefined;
    const h = this.sha256('sha-256');
    h.update(data);
    const digest = h.digest();
    this.chain.update(u64(offset));
    this.chain.update(digest);
    this.chunks++;
    this.dataBytes += data.length;
    return frame('D', u64(offset), digest, data);
  }

  end(): { frame: Uint8Array; tail: ArchiveTail; tailBytes: Uint8Array } {
    const tail: ArchiveTail = { chunks: this.chunks, dataBytes: this.dataBytes, digest: hex(this.chain.digest()) };
    const tailBytes = new TextEncoder().encode(JSON.stringify(tail));
    return { frame: frame('T', tailBytes), tail, tailBytes };
  }
}

/** A signature frame, to append after the tail. */
export function signatureFrame(sig: ArchiveSignature): Uint8Array {
  return frame('S', new TextEncoder().encode(JSON.stringify(sig)));
}

/** The bytes of `parts`, one after another, in one new array. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const malformed = (why: string) => new OcsError('archive_malformed', `not a whole space archive: ${why}`);
const corrupt = (why: string) => new OcsError('archive_corrupt', `the archive is corrupt: ${why}`);

/** What the reader has seen so far, once it is complete. */
export interface ArchiveSummary {
  head: ArchiveHead;
  headBytes: Uint8Array;
  tail: ArchiveTail;
  tailBytes: Uint8Array;
  signatures: ArchiveSignature[];
}

/**
 * Reads an archive in pieces of any size: `push` returns the data chunks it completed, each
 * already checked against its digest; `finish` checks that the archive ended whole and returns
 * its head, tail and signatures. Every way an archive can be wrong is an OcsError with a stable
 * code (`archive_version`, `archive_malformed`, `archive_corrupt`); nothing of a bad frame is
 * handed on. Signatures are the caller's to check (it knows whose key it trusts).
 */
export class ArchiveReader {
  /** Bytes received and not yet read as a whole frame. */
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private started = false;
  private head: ArchiveHead | undefined;
  private headBytes: Uint8Array | undefined;
  private tail: { tail: ArchiveTail; bytes: Uint8Array } | undefined;
  private readonly signatures: ArchiveSignature[] = [];
  private readonly chain;
  private chunks = 0;
  private dataBytes = 0;
  private last = -1;
  /** Where the data so far ends: a send stream's next chunk starts exactly there. */
  private end = 0;

  constructor(private readonly sha256: HashFactory) {
    this.chain = sha256('sha-256');
  }

  /** The head, once its frame has been read. */
  get headSeen(): ArchiveHead | undefined {
    return this.head;
  }

  /** The head frame's bytes exactly as they came, once read (what `archiveHeadDigest` sums). */
  get headBytesSeen(): Uint8Array | undefined {
    return this.headBytes;
  }

  push(piece: Uint8Array): ArchiveChunk[] {
    if (piece.length > 0) {
      this.pending.push(piece);
      this.pendingBytes += piece.length;
    }
    const out: ArchiveChunk[] = [];
    if (!this.started) {
      if (this.pendingBytes < ARCHIVE_MAGIC.length + 1) return out;
      const start = this.take(ARCHIVE_MAGIC.length + 1);
      if (!ARCHIVE_MAGIC.every((b, i) => start[i] === b)) throw malformed('it does not start as one');
      const version = start[ARCHIVE_MAGIC.length];
      if (version !== ARCHIVE_FORMAT)
        throw new OcsError(
          'archive_version',
          `archive format ${version} is not one this version reads (${ARCHIVE_FORMAT})`,
        );
      this.started = true;
    }
    while (this.pendingBytes >= FRAME_HEADER) {
      const header = this.peek(FRAME_HEADER);
      const kind = String.fromCharCode(header[0]!);
      const length = new DataView(header.buffer, header.byteOffset + 1, 4).getUint32(0);
      this.checkLength(kind, length);
      if (this.pendingBytes < FRAME_HEADER + length) break;
      const payload = this.take(FRAME_HEADER + length).subarray(FRAME_HEADER);
      const chunk = this.frame(kind, payload);
      if (chunk) out.push(chunk);
    }
    return out;
  }

  /** The first `n` pending bytes, left pending. */
  private peek(n: number): Uint8Array {
    const first = this.pending[0]!;
    return first.length >= n ? first.subarray(0, n) : this.assemble(n, false);
  }

  /** The first `n` pending bytes, consumed: a view when one piece holds them, else one copy. */
  private take(n: number): Uint8Array {
    const first = this.pending[0]!;
    if (first.length >= n) {
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
      this.pendingBytes -= n;
      return first.subarray(0, n);
    }
    return this.assemble(n, true);
  }

  private assemble(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    let i = 0;
    while (at < n) {
      const p = this.pending[i]!;
      const k = Math.min(p.length, n - at);
      out.set(p.subarray(0, k), at);
      at += k;
      if (consume) {
        if (k === p.length) this.pending.shift();
        else this.pending[0] = p.subarray(k);
      } else i++;
    }
    if (consume) this.pendingBytes -= n;
    return out;
  }

  finish(): ArchiveSummary {
    if (!this.started || !this.head || !this.headBytes) throw malformed('it ends before its head');
    if (!this.tail) throw malformed('it ends before its tail (truncated)');
    if (this.pendingBytes > 0) throw malformed('it ends inside a frame');
    return {
      head: this.head,
      headBytes: this.headBytes,
      tail: this.tail.tail,
      tailBytes: this.tail.bytes,
      signatures: this.signatures,
    };
  }

  private checkLength(kind: string, length: number): void {
    const max = kind === 'D' ? DATA_PREFIX + (this.head?.image.chunkBytes ?? ARCHIVE_CHUNK_BYTES) : MAX_JSON_FRAME;
    if (length > max) throw malformed(`a '${kind}' frame of ${length} bytes is over its limit`);
  }

  private frame(kind: string, payload: Uint8Array): ArchiveChunk | undefined {
    switch (kind) {
      case 'H':
        if (this.head) throw malformed('a second head');
        this.head = parseHead(payload);
        // A copy, whatever `payload` is: Buffer's `slice` is a view of the piece pushed.
        this.headBytes = new Uint8Array(payload);
        return undefined;
      case 'D':
        return this.data(payload);
      case 'T': {
        if (!this.head) throw malformed('a tail before the head');
        if (this.tail) throw malformed('a second tail');
        const tail = parseJson<ArchiveTail>(payload, 'tail');
        if (tail.chunks !== this.chunks || tail.dataBytes !== this.dataBytes)
          throw corrupt(`the tail counts ${tail.chunks} chunks, ${this.chunks} arrived`);
        if (tail.digest !== hex(this.chain.digest())) throw corrupt('the chunks are not the ones the tail names');
        this.tail = { tail, bytes: new Uint8Array(payload) };
        return undefined;
      }
      case 'S':
        if (!this.tail) throw malformed('a signature before the tail');
        this.signatures.push(parseSignature(payload));
        return undefined;
      default:
        throw malformed(`an unknown frame '${kind}'`);
    }
  }

  private data(payload: Uint8Array): ArchiveChunk {
    const head = this.head;
    if (!head) throw malformed('data before the head');
    if (this.tail) throw malformed('data after the tail');
    if (payload.length <= DATA_PREFIX) throw malformed('an empty data frame');
    const view = new DataView(payload.buffer, payload.byteOffset, DATA_PREFIX);
    const offset = Number(view.getBigUint64(0));
    const data = payload.subarray(DATA_PREFIX);
    if (offset % head.image.chunkBytes !== 0 || offset <= this.last || offset + data.length > head.image.bytes)
      throw corrupt(`a chunk at offset ${offset} is out of place`);
    if (head.backend === 'zfs' && offset !== this.end)
      throw corrupt(`the send stream has a gap before offset ${offset}`);
    const digest = payload.subarray(8, DATA_PREFIX);
    const h = this.sha256('sha-256');
    h.update(data);
    const actual = h.digest();
    if (!actual.every((b, i) => b === digest[i]))
      throw corrupt(`the chunk at offset ${offset} does not match its digest`);
    this.chain.update(u64(offset));
    this.chain.update(actual);
    this.last = offset;
    this.end = offset + data.length;
    this.chunks++;
    this.dataBytes += data.length;
    return { offset, data };
  }
}

function parseJson<T>(payload: Uint8Array, what: string): T {
  try {
    const v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as T;
  } catch {
    throw malformed(`its ${what} is not JSON`);
  }
}

function parseHead(payload: Uint8Array): ArchiveHead {
  const head = parseJson<{ format?: unknown }>(payload, 'head');
  if (head.format !== ARCHIVE_FORMAT)
    throw new OcsError('archive_version', `archive format ${String(head.format)} is not one this version reads`);
  try {
    return validate(ArchiveHead, head, 'archive head');
  } catch (err) {
    // The schema's own words (which field, which rule), under the archive's code.
    throw malformed(`its head does not say what the space is (${(err as Error).message})`);
  }
}

function parseSignature(payload: Uint8Array): ArchiveSignature {
  const s = parseJson<ArchiveSignature>(payload, 'signature');
  if ((s.by !== 'owner' && s.by !== 'node') || typeof s.publicKey !== 'string' || typeof s.signature !== 'string')
    throw malformed('a signature frame names no signer');
  return s;
}
