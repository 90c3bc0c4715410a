/**
 * Checks a `docker save` tarball and rewrites it so the space's engine loads exactly one image under exactly
 * the name we choose.
 *
 * Why not hand the owner's tarball to the engine and re-tag afterwards: `docker load` applies the
 * tags in the archive's manifest (and its legacy `repositories` file) as it loads, so a tarball
 * naming `ocs-<another space>/app:latest` would silently re-point another space's image, and any
 * tag would be visible in the engine until we removed it. A manifest `Parent` would link the image to
 * an existing one (blocking that image's removal). And a tarball without a manifest is loaded by
 * the engine's legacy path as untagged images nobody would ever find again.
 *
 * So the tarball is spooled to a private file while a streaming parser checks its structure;
 * then the engine receives the same bytes minus `manifest.json`, `repositories` and `index.json`,
 * plus one manifest of ours appended last (`RepoTags: [our name]`, no `Parent`). The engine never
 * sees a byte of an archive we did not fully check, so nothing needs aborting half-way.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { OcsError } from '@ocs/protocol';
import { TarFormatError, TarScanner, tarEnd, ustarFile } from './tar.js';
import type { TarEntry } from './tar.js';

/** Entries the engine would read for names or layout; all are dropped, and our manifest replaces the first. */
const DROPPED = ['manifest.json', 'repositories', 'index.json'];
const MAX_MANIFEST = 1024 * 1024;

export interface ManifestEntry {
  Config: string;
  Layers: string[];
}

export interface CheckedArchive {
  /** The one image's entry of the original manifest (config and layer paths inside the archive). */
  image: ManifestEntry;
  /** The archive the engine should load: original bytes, our manifest; read it once. */
  rewritten(repoTag: string): Readable;
  /** Removes the spool file. Idempotent. */
  cleanup(): Promise<void>;
}

function invalid(message: string): OcsError {
  return new OcsError('invalid_request', `not a usable docker save tarball: ${message}`, { field: 'tar' });
}

function isDropped(name: string): boolean {
  return DROPPED.some((d) => name === d || name.startsWith(`${d}/`));
}

/** The manifest must name exactly one image, with paths that exist in the archive. */
function checkManifest(data: Buffer | undefined, names: Map<string, TarEntry>): ManifestEntry {
  if (data === undefined) throw invalid('it has no manifest.json');
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString('utf8'));
  } catch {
    throw invalid('manifest.json is not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw invalid('manifest.json lists no image');
  if (parsed.length > 1) throw invalid('it holds more than one image; save one image per tarball');
  const m = parsed[0] as { Config?: unknown; Layers?: unknown };
  const isPath = (p: unknown): p is string => typeof p === 'string' && p.length > 0 && p.length < 1024;
  if (!isPath(m.Config) || !Array.isArray(m.Layers) || m.Layers.length > 256 || !m.Layers.every(isPath)) {
    throw invalid('manifest.json has no Config or Layers');
  }
  const present = (p: string) => {
    const e = names.get(p.replace(/^\.\//, ''));
    return e !== undefined && (e.type === '0' || e.type === '7' || e.type === '2' || e.type === '1');
  };
  if (!present(m.Config) || !m.Layers.every(present)) throw invalid('manifest.json names files the archive lacks');
  return { Config: m.Config, Layers: m.Layers };
}

/**
 * Nothing may be written through a link: an entry named `d/x` where `d` is a symlink or hard
 * link could land anywhere inside the extraction directory (e.g. on `manifest.json`).
 */
function checkNoWritesThroughLinks(entries: TarEntry[]): void {
  const links = new Set(entries.filter((e) => e.type === '1' || e.type === '2').map((e) => e.name));
  if (links.size === 0) return;
  for (const e of entries) {
    const parts = e.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      if (links.has(parts.slice(0, i).join('/'))) throw invalid('an entry is written through a link');
    }
  }
}

/**
 * Spools `tar` into a fresh 0700 directory under `tmpDir`, checking it on the way. Refuses with
 * `invalid_request` (malformed, not exactly one image) or `budget_exceeded` (over `maxBytes`).
 */
export async function checkImageArchive(
  tar: NodeJS.ReadableStream,
  opts: { tmpDir?: string; maxBytes: number },
): Promise<CheckedArchive> {
  const dir = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'ocs-image-'));
  const file = join(dir, 'image.tar');
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    let manifest: Buffer | undefined;
    const scanner = new TarScanner({
      wantData: (e) => e.name === 'manifest.json' && e.type === '0',
      onEntry: (e, data) => {
        if (e.name === 'manifest.json') manifest = data;
      },
      maxCapture: MAX_MANIFEST,
    });
    const out = createWriteStream(file, { mode: 0o600, flags: 'wx' });
    const outDone = new Promise<void>((resolve, reject) => {
      out.on('error', reject);
      out.on('finish', resolve);
    });
    let total = 0;
    try {
      for await (const chunk of tar as AsyncIterable<Buffer | string>) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        total += buf.length;
        if (total > opts.maxBytes) {
          throw new OcsError('budget_exceeded', `the image tarball is larger than ${opts.maxBytes} bytes`, {
            maxBytes: opts.maxBytes,
          });
        }
        scanner.write(buf);
        if (!out.write(buf)) await once(out, 'drain'); // rejects if the spool file fails
      }
      scanner.finish();
    } finally {
      out.end();
      await outDone;
    }
    const names = new Map<string, TarEntry>();
    for (const e of scanner.entries) names.set(e.name, e);
    const image = checkManifest(manifest, names);
    checkNoWritesThroughLinks(scanner.entries);
    const kept = scanner.entries.filter((e) => !isDropped(e.name));
    const end = scanner.endOffset ?? 0;
    return {
      image,
      rewritten: (repoTag) => Readable.from(rewrite(file, kept, end, image, repoTag)),
      cleanup,
    };
  } catch (err) {
    await cleanup();
    if (err instanceof TarFormatError) throw invalid(err.message);
    throw err;
  }
}

/**
 * The original bytes of every kept entry, in order, then our manifest and the end marker.
 * Entries are contiguous in a tar file, so the dropped ones are simply skipped over.
 */
async function* rewrite(
  file: string,
  kept: TarEntry[],
  end: number,
  image: ManifestEntry,
  repoTag: string,
): AsyncGenerator<Buffer> {
  const fh = await open(file, 'r');
  try {
    for (const e of kept) {
      if (e.end > end) throw new Error('tar entry beyond the end marker');
      for (let pos = e.start; pos < e.end;) {
        const len = Math.min(1024 * 1024, e.end - pos);
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await fh.read(buf, 0, len, pos);
        if (bytesRead !== len) throw new Error('image spool file changed while reading');
        yield buf;
        pos += len;
      }
    }
  } finally {
    await fh.close();
  }
  const manifest = JSON.stringify([{ Config: image.Config, RepoTags: [repoTag], Layers: image.Layers }]);
  yield ustarFile('manifest.json', Buffer.from(manifest), 0o644);
  yield tarEnd();
}
