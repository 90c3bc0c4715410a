/**
 * Receiving a space archive from the network: untrusted input, read in the order that lets each
 * check come before what it protects.
 *
 * 1. The head, alone (at most one frame of 1 MiB): who the owner is, what the space holds.
 * 2. The caller checks the request's signature against that owner, and reserves the space.
 * 3. Every chunk, checked against its own digest as it arrives, is written into the new space's
 *    image, which nothing mounts yet; the request's Content-Digest is summed over every byte.
 * 4. At the end: the tail (whose digest chains every chunk: nothing dropped, repeated, moved),
 *    the Content-Digest, and the owner's signature over head and tail. Only then is the image's
 *    filesystem checked (in a sandbox) and the space kept.
 *
 * A refusal at any step drops everything of the space (see `SpaceService.beginRestore`).
 */
import type { ArchiveReader } from '@ocs/protocol';
import {
  OcsError,
  archiveSigningInput,
  parsePublicKey,
  type ArchiveChunk,
  type ArchiveHead,
  type ArchiveSummary,
  type HashFactory,
} from '@ocs/protocol';
import { nodeVerify } from '../crypto.js';

/** What a request's body is read through: the archive's own reader and the Content-Digest's sum. */
export interface ArchiveIntake {
  reader: ArchiveReader;
  digest: { update(b: Uint8Array): void; verify(): void };
}

/** Reads until the head has arrived; returns it with any chunks that came in the same pieces. */
export async function readHead(
  body: AsyncIterator<Uint8Array>,
  intake: ArchiveIntake,
): Promise<{ head: ArchiveHead; early: ArchiveChunk[] }> {
  const early: ArchiveChunk[] = [];
  for (;;) {
    const next = await body.next();
    if (next.done) {
      intake.reader.finish(); // throws: the archive ended before its head
      throw new OcsError('archive_malformed', 'the archive ends before its head');
    }
    intake.digest.update(next.value);
    early.push(...intake.reader.push(next.value));
    const head = intake.reader.headSeen;
    if (head) return { head, early };
  }
}

/** Chunks written at once (4 MiB each). */
const WRITES_IN_FLIGHT = 4;

/** Reads the rest, handing each checked chunk to `write`; returns what the archive was. */
export async function readRest(
  body: AsyncIterator<Uint8Array>,
  intake: ArchiveIntake,
  early: readonly ArchiveChunk[],
  write: (chunk: ArchiveChunk) => Promise<void>,
): Promise<ArchiveSummary> {
  // Writes overlap the reading and checking of the chunks after them (each goes to its own
  // offset); at most WRITES_IN_FLIGHT are pending, so memory stays a few chunks.
  const pending: Promise<void>[] = [];
  const queue = async (c: ArchiveChunk) => {
    const p = write(c);
    p.catch(() => undefined); // awaited below, in order
    pending.push(p);
    if (pending.length >= WRITES_IN_FLIGHT) await pending.shift();
  };
  /** Every write ended; the first that failed, if one did. */
  const settle = async (): Promise<unknown> => {
    const results = await Promise.allSettled(pending);
    return (results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined)?.reason;
  };
  let summary: ArchiveSummary;
  try {
    for (const c of early) await queue(c);
    for (;;) {
      const next = await body.next();
      if (next.done) break;
      intake.digest.update(next.value);
      for (const c of intake.reader.push(next.value)) await queue(c);
    }
    summary = intake.reader.finish();
    intake.digest.verify();
  } catch (err) {
    // The writes end before the caller drops the image; a refusal of the archive stays the error.
    await settle();
    throw err;
  }
  const failed = await settle();
  if (failed !== undefined) throw failed;
  return summary;
}

/**
 * The archive must carry its owner's signature over its head and tail (`ocs` adds it to what
 * it received and checked); a signature by any other key does not count.
 */
export async function requireOwnerSignature(summary: ArchiveSummary, hashes: HashFactory): Promise<void> {
  if (await signedBy(summary, 'owner', summary.head.ownerKey, hashes)) return;
  throw new OcsError('archive_signature_invalid', "the archive carries no valid signature by its owner's key");
}

/** A moving space's archive must carry the signature of the node the import names as its source. */
export async function requireNodeSignature(
  summary: ArchiveSummary,
  nodeKey: string,
  hashes: HashFactory,
): Promise<void> {
  if (await signedBy(summary, 'node', nodeKey, hashes)) return;
  throw new OcsError('archive_signature_invalid', 'the archive carries no valid signature by the node it comes from');
}

async function signedBy(
  summary: ArchiveSummary,
  by: 'owner' | 'node',
  publicKey: string,
  hashes: HashFactory,
): Promise<boolean> {
  const input = archiveSigningInput(summary.headBytes, summary.tailBytes, hashes);
  const key = parsePublicKey(publicKey).bytes;
  for (const s of summary.signatures) {
    if (s.by !== by || s.publicKey !== publicKey) continue;
    let sig: Uint8Array;
    try {
      sig = new Uint8Array(Buffer.from(s.signature, 'base64url'));
    } catch {
      continue;
    }
    if (sig.length === 64 && (await nodeVerify(sig, input, key))) return true;
  }
  return false;
}
