/**
 * Uploads stream to the space's own encrypted storage, hashed as they pass: the owner's
 * `Content-Digest` is checked over the exact bytes (a mismatch leaves nothing behind), and a
 * SHA-256 is kept so the owner can see what the node holds. The space's storage size is the hard
 * limit: the kernel refuses past it, which becomes `budget_exceeded`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { OcsError, createDigestVerifier, isOutOfSpace, type HashFactory } from '@ocs/protocol';

/** Names of uploads in flight: never a valid owner name, so never listed or overwritten by one. */
export const SPOOL_PREFIX = '.upload-';

export interface Uploaded {
  /** The spool file's name in `dir`; the caller renames or removes it. */
  spoolName: string;
  sizeBytes: number;
  sha256: string;
}

export async function receiveUpload(
  body: Readable,
  opts: { dir: string; contentDigest: string | undefined; maxBytes: number; hashes: HashFactory },
): Promise<Uploaded> {
  if (opts.contentDigest === undefined)
    throw new OcsError('digest_missing', 'an upload must carry a Content-Digest header');
  const digest = createDigestVerifier(opts.contentDigest, opts.hashes);
  const sha = createHash('sha256');
  const spoolName = `${SPOOL_PREFIX}${randomBytes(8).toString('hex')}`;
  const path = join(opts.dir, spoolName);
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let size = 0;
  let ok = false;
  try {
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > opts.maxBytes)
          throw new OcsError('budget_exceeded', 'the upload is larger than the space has room for', {
            resource: 'storageBytes',
            available: opts.maxBytes,
          });
        digest.update(chunk);
        sha.update(chunk);
        await fh.write(chunk);
      }
    } catch (err) {
      if (err instanceof OcsError) throw err;
      if (isOutOfSpace(err))
        throw new OcsError('budget_exceeded', 'the space storage is full', { resource: 'storageBytes' });
      throw new OcsError('invalid_request', 'the upload could not be read');
    }
    digest.verify();
    await fh.sync();
    ok = true;
    return { spoolName, sizeBytes: size, sha256: sha.digest('hex') };
  } finally {
    await fh.close();
    if (!ok) await rm(path, { force: true });
  }
}

/** Moves a finished upload to its name; `conflict` if that name is taken (nothing replaced). */
export async function publishUpload(dir: string, spoolName: string, name: string): Promise<void> {
  const from = join(dir, spoolName);
  try {
    // link + unlink instead of rename: link fails when the target exists, rename would replace it.
    await link(from, join(dir, name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new OcsError('conflict', `a file named ${name} exists; delete it first`, { file: name });
    throw err;
  } finally {
    await rm(from, { force: true });
  }
}
