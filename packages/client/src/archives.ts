/**
 * Space archives on the owner's side: an archive streamed from a node is checked frame by frame
 * as it arrives (each chunk against its digest, the whole against the tail), written to a file,
 * and only then signed with the owner's key and given its name. A cut or corrupted download
 * never leaves a file under the name asked for; the signature says "the owner took this archive
 * of this space", which is what a node restoring it will ask for.
 */
import { link, open, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  ArchiveReader,
  OcsError,
  archiveSigningInput,
  signatureFrame,
  type ArchiveHead,
  type ArchiveTail,
  type Ed25519PrivateKey,
} from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';

const toBase64url = (b: Uint8Array) => Buffer.from(b).toString('base64url');

export interface SavedArchive {
  file: string;
  head: ArchiveHead;
  tail: ArchiveTail;
  /** Bytes written, signature included. */
  bytes: number;
}

/**
 * Reads `stream` (a node's `GET …/archive`) into `file` (a new file, 0600; never replaces one), checking it as it
 * comes, then appends the owner's signature. `onProgress` gets the bytes received and the image's
 * size once the head told it (0 while unknown, and for a ZFS space's send stream).
 */
export async function saveArchive(
  stream: Readable,
  file: string,
  owner: Ed25519PrivateKey,
  onProgress?: (received: number, imageBytes: number) => void,
): Promise<SavedArchive> {
  const partial = `${file}.partial`;
  const fh = await open(partial, 'wx', 0o600);
  let bytes = 0;
  try {
    const reader = new ArchiveReader(nativeHashes);
    for await (const piece of stream) {
      const b = piece as Buffer;
      // Checked before it is written: a frame that fails its digest never reaches the file.
      reader.push(new Uint8Array(b.buffer, b.byteOffset, b.length));
      await fh.write(b);
      bytes += b.length;
      // A ZFS space's send stream has a bound, not a size: its total is not known until the end.
      const head = reader.headSeen;
      onProgress?.(bytes, head && head.backend !== 'zfs' ? head.image.bytes : 0);
    }
    const summary = reader.finish();
    const signature = owner.sign(archiveSigningInput(summary.headBytes, summary.tailBytes, nativeHashes));
    const frame = signatureFrame({
      by: 'owner',
      publicKey: owner.publicKey.toBase64url(),
      signature: toBase64url(signature),
    });
    await fh.write(frame);
    bytes += frame.length;
    await fh.sync();
    await fh.close();
    // Linked, not renamed: a file made under the name meanwhile is never replaced (EEXIST).
    await link(partial, file);
    await rm(partial, { force: true });
    return { file, head: summary.head, tail: summary.tail, bytes };
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(partial, { force: true });
    stream.destroy();
    throw err;
  }
}

/**
 * The head of the archive in `file`, read from its start (at most its first frame; nothing after
 * it is checked): what space it is of (`spaceId`, whose wrapped key opens a restore of it) and
 * whose (`ownerKey`). A file that does not start as an archive is an OcsError
 * (`archive_malformed`, `archive_version`).
 */
export async function readArchiveHead(file: string): Promise<ArchiveHead> {
  return (await readArchiveHeadFrame(file)).head;
}

/** The head of the archive in `file` and its frame's bytes (what a restore request is bound to). */
export async function readArchiveHeadFrame(file: string): Promise<{ head: ArchiveHead; bytes: Uint8Array }> {
  const reader = new ArchiveReader(nativeHashes);
  const fh = await open(file, 'r');
  try {
    const piece = Buffer.alloc(64 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(piece, 0, piece.length, null);
      if (bytesRead === 0) break;
      // A copy: the reader keeps what it has not read yet, and the buffer is read into again.
      reader.push(new Uint8Array(piece.subarray(0, bytesRead)));
      if (reader.headSeen) return { head: reader.headSeen, bytes: reader.headBytesSeen! };
    }
  } finally {
    await fh.close();
  }
  reader.finish(); // ends before its head: archive_malformed
  throw new Error('unreachable');
}

export interface AdoptedArchive {
  head: ArchiveHead;
  /** True when the owner's signature was appended now; false when the file carried it already. */
  signed: boolean;
  /** Base64url keys of the nodes that signed it (a drain's export, a move's archive). */
  nodes: string[];
}

/**
 * Makes an archive the owner did not download (a drain's export, handed over by the farmer)
 * restorable with the owner's key: the whole file is read and checked as a node would (every
 * frame, every chunk against its digest, the tail's chain), its head must name this owner's
 * key, and the owner's signature over its head and tail is appended. A file that already
 * carries the owner's signature is left as it is.
 */
export async function adoptArchive(file: string, owner: Ed25519PrivateKey): Promise<AdoptedArchive> {
  const reader = new ArchiveReader(nativeHashes);
  const fh = await open(file, 'r+');
  try {
    const piece = Buffer.alloc(4 * 1024 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(piece, 0, piece.length, null);
      if (bytesRead === 0) break;
      reader.push(new Uint8Array(piece.subarray(0, bytesRead)));
    }
    const summary = reader.finish();
    const mine = owner.publicKey.toBase64url();
    if (summary.head.ownerKey !== mine)
      throw new OcsError('not_owner', 'the archive is of a space bound to another key: only its owner adopts it');
    const nodes = summary.signatures.filter((s) => s.by === 'node').map((s) => s.publicKey);
    if (summary.signatures.some((s) => s.by === 'owner' && s.publicKey === mine))
      return { head: summary.head, signed: false, nodes };
    const signature = owner.sign(archiveSigningInput(summary.headBytes, summary.tailBytes, nativeHashes));
    const frame = signatureFrame({ by: 'owner', publicKey: mine, signature: toBase64url(signature) });
    const { size } = await fh.stat();
    await fh.write(frame, 0, frame.length, size);
    await fh.sync();
    return { head: summary.head, signed: true, nodes };
  } finally {
    await fh.close();
  }
}

/**
 * Who signed the archive in `file`, found by walking its frames' headers (their payloads are
 * skipped, not read): cheap, and checks nothing but the framing. `adoptArchive` checks.
 */
export async function archiveSigners(file: string): Promise<{ by: 'owner' | 'node'; publicKey: string }[]> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const header = Buffer.alloc(5);
    const signers: { by: 'owner' | 'node'; publicKey: string }[] = [];
    // Magic and format version, then frames: kind (1 byte) | length (u32 BE) | payload.
    for (let at = 5; at + 5 <= size;) {
      await fh.read(header, 0, 5, at);
      const kind = String.fromCharCode(header[0]!);
      const length = header.readUInt32BE(1);
      if (kind === 'S' && length <= 64 * 1024) {
        const payload = Buffer.alloc(length);
        await fh.read(payload, 0, length, at + 5);
        try {
          const s = JSON.parse(payload.toString('utf8')) as { by?: unknown; publicKey?: unknown };
          if ((s.by === 'owner' || s.by === 'node') && typeof s.publicKey === 'string')
            signers.push({ by: s.by, publicKey: s.publicKey });
        } catch {
          // not a signature this walk understands; the node's reader refuses it
        }
      }
      at += 5 + length;
    }
    return signers;
  } finally {
    await fh.close();
  }
}
