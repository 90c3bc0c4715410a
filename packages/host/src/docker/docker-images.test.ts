/**
 * Images against the real dockerd: a space sees, runs and removes only its own; the tags a
 * tarball brings are never applied; bad tarballs leave nothing behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDockerDriver } from './driver.js';
import { imageRef } from './names.js';
import { importBusyboxImage } from './test-image.js';
import {
  busyboxTarball,
  cleanupSpaces,
  docker,
  dockerSkip,
  newSpaceId,
  rejectsWith,
  specFor,
  testCgroups,
} from './test-support.js';

const skip = await dockerSkip();
const driver = createDockerDriver();
const A = newSpaceId();
const B = newSpaceId();
const cgroups = testCgroups();
let tarball: { path: string; remove(): void } | undefined;
/** A different image whose tarball names A's image (`ocs-<A>/busybox:latest`), as a hostile owner of B would craft it. */
let hostile: { path: string; remove(): void } | undefined;
let workDir = '';
const tempTags: string[] = [];

const is404 = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;

before(async () => {
  if (skip) return;
  workDir = await mkdtemp(join(tmpdir(), 'ocs-docker-images-'));
  // Built before A loads anything, so tagging A's name for the build touches nothing of A's.
  hostile = await busyboxTarball({ tag: imageRef(A, 'busybox'), changes: [`LABEL ocs.test.hostile=${B}`] });
  tarball = await busyboxTarball();
});

after(async () => {
  if (skip) return;
  await cleanupSpaces([A, B]);
  for (const t of tempTags)
    await docker
      .getImage(t)
      .remove({ force: true })
      .catch(() => undefined);
  tarball?.remove();
  hostile?.remove();
  if (workDir) await rm(workDir, { recursive: true, force: true });
  cgroups.remove();
});

test("a loaded image is named for its space only; the tarball's own tag is gone", { skip }, async (t) => {
  const started = Date.now();
  const loaded = await driver.loadImage(A, 'busybox', createReadStream(tarball!.path));
  t.diagnostic(`loadImage of a ${Math.round(loaded.sizeBytes / 1024)} KiB image: ${Date.now() - started} ms`);
  assert.match(loaded.dockerId, /^sha256:[0-9a-f]{64}$/);
  const info = await docker.getImage(loaded.dockerId).inspect();
  assert.deepEqual(info.RepoTags, [imageRef(A, 'busybox')], 'no other name, in particular not the one in the tarball');
  const images = await driver.listImages(A);
  assert.equal(images.length, 1);
  assert.equal(images[0]?.name, 'busybox');
  assert.equal(images[0]?.dockerId, loaded.dockerId);
  assert.equal(images[0]?.sizeBytes, loaded.sizeBytes);
  assert.ok(!Number.isNaN(Date.parse(images[0]?.created ?? '')));
});

test('another space cannot list, run or remove it', { skip }, async () => {
  assert.deepEqual(await driver.listImages(B), []);
  await rejectsWith(driver.create(specFor(B, cgroups.parentFor(B))), 'not_found');
  await rejectsWith(driver.removeImage(B, 'busybox'), 'not_found');
  assert.equal((await driver.listImages(A)).length, 1, 'still there for A');
});

test("a tarball naming another space's image cannot re-point that name", { skip }, async () => {
  const victim = imageRef(A, 'busybox');
  const before = (await docker.getImage(victim).inspect()).Id;
  const loaded = await driver.loadImage(B, 'evil', createReadStream(hostile!.path));
  assert.notEqual(loaded.dockerId, before, 'a different image');
  assert.equal((await docker.getImage(victim).inspect()).Id, before, "A's name still points at A's image");
  assert.deepEqual((await docker.getImage(loaded.dockerId).inspect()).RepoTags, [imageRef(B, 'evil')]);
  assert.deepEqual(
    (await driver.listImages(A)).map((i) => i.dockerId),
    [before],
  );
  await driver.removeImage(B, 'evil');
  await assert.rejects(docker.getImage(loaded.dockerId).inspect(), is404, 'unused content goes with its last name');
});

test('loading the same name twice is a conflict; another name for the same content is fine', { skip }, async () => {
  await rejectsWith(driver.loadImage(A, 'busybox', createReadStream(tarball!.path)), 'conflict');
  const again = await driver.loadImage(A, 'bb2', createReadStream(tarball!.path));
  const first = (await driver.listImages(A)).find((i) => i.name === 'busybox');
  assert.equal(again.dockerId, first?.dockerId, 'content-addressed: same id');
  await driver.removeImage(A, 'bb2');
  assert.deepEqual(
    (await driver.listImages(A)).map((i) => i.name),
    ['busybox'],
  );
  await docker.getImage(again.dockerId).inspect(); // the content stays for the other name
});

test('a tarball with two images is refused and neither is loaded', { skip }, async () => {
  const tags = [`ocs-test-tmp/two-${B.slice(3)}:a`, `ocs-test-tmp/two-${B.slice(3)}:b`];
  tempTags.push(...tags);
  const ids: string[] = [];
  for (const [i, tag] of tags.entries())
    ids.push(await importBusyboxImage(tag, { changes: [`LABEL ocs.test.n=${i}-${B}`] }));
  const both = join(workDir, 'two.tar');
  // GET /images/get?names=…&names=… (dockerode has it; its types do not).
  const getImages = (docker as unknown as { getImages(o: { names: string[] }): Promise<NodeJS.ReadableStream> })
    .getImages;
  await pipeline(await getImages.call(docker, { names: tags }), createWriteStream(both));
  for (const tag of tags) await docker.getImage(tag).remove();
  for (const id of ids) await assert.rejects(docker.getImage(id).inspect(), is404);

  await rejectsWith(driver.loadImage(B, 'two', createReadStream(both)), 'invalid_request', /more than one image/);
  for (const id of ids) await assert.rejects(docker.getImage(id).inspect(), is404, 'nothing was loaded');
  assert.deepEqual(await driver.listImages(B), []);
});

test('malformed tarballs are refused before dockerd sees them', { skip }, async () => {
  const whole = await readFile(tarball!.path);
  await rejectsWith(driver.loadImage(B, 'junk', Readable.from([Buffer.alloc(4096, 7)])), 'invalid_request');
  await rejectsWith(
    driver.loadImage(B, 'cut', Readable.from([whole.subarray(0, Math.floor(whole.length / 2))])),
    'invalid_request',
  );
  await rejectsWith(driver.loadImage(B, 'big', Readable.from([whole]), { maxBytes: 1024 }), 'budget_exceeded');
  await rejectsWith(driver.loadImage(B, 'Bad/Name', Readable.from([whole])), 'invalid_request');
  assert.deepEqual(await driver.listImages(B), []);
});

test('removeImage frees the name; a missing one is not_found', { skip }, async () => {
  await driver.removeImage(A, 'busybox');
  assert.deepEqual(await driver.listImages(A), []);
  await rejectsWith(driver.removeImage(A, 'busybox'), 'not_found');
});

test('an unreachable dockerd is unavailable', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ocs-nodocker-'));
  try {
    const offline = createDockerDriver({ socketPath: join(dir, 'docker.sock') });
    await rejectsWith(offline.listImages(A), 'unavailable');
    await rejectsWith(offline.list(A), 'unavailable');
    await rejectsWith(offline.ensureNetwork(A), 'unavailable');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
