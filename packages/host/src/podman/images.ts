/**
 * A space's images, in the space's own engine. Each has exactly one name of ours,
 * `ocs-<spaceId>/<name>:latest` (podman prefixes it `localhost/`); a space sees, runs and removes
 * only images under its own prefix, whatever else its engine holds. Images are found by name,
 * never by label (their labels come from the owner-written config).
 */
import { OcsError } from '@ocs/protocol';
import { call, type DriverContext } from './context.js';
import { statusOf, toOcsError } from './errors.js';
import { checkImageArchive } from './image-archive.js';
import { LABEL_SPACE, checkName, checkSpaceId, imageRef, parseImageRef } from './names.js';
import { progressError, readProgress } from './streams.js';
import type { LoadImageOptions, SpaceImage } from './types.js';

/** The space's image by name, or `not_found`. Checks the name really is ours (not an id prefix match). */
export async function inspectSpaceImage(ctx: DriverContext, spaceId: string, name: string) {
  const ref = imageRef(spaceId, name);
  const info = await call('find the image', () => ctx.docker.getImage(ref).inspect());
  const ours = (t: string) => {
    const p = parseImageRef(t);
    return p?.spaceId === spaceId && p.name === name;
  };
  if (!(info.RepoTags ?? []).some(ours)) throw new OcsError('not_found', 'no such image in this space');
  return info;
}

async function exists(ctx: DriverContext, ref: string): Promise<boolean> {
  try {
    await ctx.docker.getImage(ref).inspect();
    return true;
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw toOcsError(err, 'look up the image');
  }
}

export async function loadImage(
  ctx: DriverContext,
  spaceId: string,
  name: string,
  tar: NodeJS.ReadableStream,
  options: LoadImageOptions = {},
): Promise<{ dockerId: string; sizeBytes: number }> {
  checkSpaceId(spaceId);
  checkName(name, 'name');
  const maxBytes = options.maxBytes ?? ctx.maxImageBytes;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0)
    throw new OcsError('invalid_request', 'maxBytes must be a positive integer');
  const ref = imageRef(spaceId, name);
  return ctx.serialize(`image:${spaceId}`, async () => {
    // Replacing would orphan the old image (untagged, so no space could see or remove it).
    if (await exists(ctx, ref))
      throw new OcsError('conflict', `image ${name} already exists in this space; remove it first`);
    const archive = await checkImageArchive(tar, { tmpDir: options.tmpDir ?? ctx.tmpDir, maxBytes });
    try {
      const out = await call('load the image', () => ctx.docker.loadImage(archive.rewritten(ref), { quiet: true }));
      const failure = progressError(await readProgress(out));
      if (failure !== undefined) {
        throw new OcsError('invalid_request', 'the container engine refused the image', {
          field: 'tar',
          reason: failure.slice(0, 500),
        });
      }
    } finally {
      await archive.cleanup();
    }
    const info = await inspectSpaceImage(ctx, spaceId, name);
    return { dockerId: info.Id, sizeBytes: info.Size };
  });
}

export async function listImages(ctx: DriverContext, spaceId: string): Promise<SpaceImage[]> {
  checkSpaceId(spaceId);
  // The engine of a space holds only its images; the names are still checked below.
  const images = await call('list images', () => ctx.docker.listImages());
  const out: SpaceImage[] = [];
  for (const img of images) {
    for (const tag of img.RepoTags ?? []) {
      const parsed = parseImageRef(tag);
      if (parsed?.spaceId !== spaceId) continue;
      out.push({
        name: parsed.name,
        dockerId: img.Id,
        sizeBytes: img.Size,
        created: new Date(img.Created * 1000).toISOString(),
      });
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Removes the space's name for an image; the content goes with it when no other name or
 * container holds it. `conflict` if a container of this space uses it (the last name only: another
 * name of the space for the same content keeps it alive).
 */
export async function removeImage(ctx: DriverContext, spaceId: string, name: string): Promise<void> {
  checkSpaceId(spaceId);
  checkName(name, 'name');
  await ctx.serialize(`image:${spaceId}`, async () => {
    const info = await inspectSpaceImage(ctx, spaceId, name);
    const mine = await call('list containers', () =>
      ctx.docker.listContainers({ all: true, filters: { label: [`${LABEL_SPACE}=${spaceId}`] } }),
    );
    // Another name of this space for the same content keeps it alive, so only the last one conflicts.
    const otherNames = (info.RepoTags ?? []).filter(
      (t) => parseImageRef(t)?.spaceId === spaceId && parseImageRef(t)?.name !== name,
    );
    if (otherNames.length === 0 && mine.some((c) => c.ImageID === info.Id)) {
      throw new OcsError('conflict', `image ${name} is used by a container of this space`);
    }
    await untag(ctx, imageRef(spaceId, name));
  });
}

/** Removes one of our names (a missing one is fine). */
export async function untag(ctx: DriverContext, ref: string): Promise<void> {
  try {
    await ctx.docker.getImage(ref).remove({ force: true, noprune: false });
  } catch (err) {
    if (statusOf(err) !== 404) throw toOcsError(err, 'remove the image');
  }
}
