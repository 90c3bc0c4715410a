/**
 * Images in a space's own podman engine: a space sees, runs and removes only its own; the tags
 * a tarball brings are never applied; bad tarballs leave nothing behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type Dockerode from 'dockerode';
import { createContainerDriver } from '#src/podman/driver.js';
import { imageRef } from '#src/podman/names.js';
import { importBusyboxImage } from '@ocs/host/testing/busybox-image';
import {
  busyboxTarball,
  engineSkip,
  imageBuilder,
  newSpaceId,
  rejectsWith,
  specFor,
  testEngines,
  type TestEngines,
} from '@ocs/host/testing/podman';
import type { ContainerDriver } from '#src/podman/types.js';

const skip = await engineSkip();
const A = newSpaceId();
const B = newSpaceId();
let t: TestEngines;
let driverA: ContainerDriver;
let driverB: ContainerDriver;
let engineA: Dockerode;
let engineB: Dockerode;
let tarball: { path: string; remove(): void } | undefined;
/** A different image whose tarball names A's image (`ocs-<A>/busybox:latest`), as a hostile owner would craft it. */
let hostile: { path: string; remove(): void } | undefined;
const tempTags: string[] = [];

const is404 = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;
/** podman names a loaded image without a registry `localhost/…`. */
const local = (ref: string) => `localhost/${ref}`;

before(async () => {
  if (skip) return;
  t = await testEngines();
  driverA = await t.driver(A);
  driverB = await t.driver(B);
  engineA = await t.docker(A);
  engineB = await t.docker(B);
  hostile = await busyboxTarball({ tag: imageRef(A, 'busybox'), changes: [`LABEL ocs.test.hostile=${B}`] });
  tarball = await busyboxTarball();
});

after(async () => {
  if (skip) return;
  // The test image builder's temporary tags (dockerd); the engines' stores go with the spaces.
  for (const tag of tempTags)
    await imageBuilder
      .getImage(tag)
      .remove({ force: true })
      .catch(() => undefined);
  tarball?.remove();
  hostile?.remove();
  await t.cleanup();
});

test("a loaded image is named for its space only; the tarball's own tag is gone", { skip }, async (tc) => {
  const started = Date.now();
  const loaded = await driverA.loadImage(A, 'busybox', createReadStream(tarball!.path));
  tc.diagnostic(`loadImage of a ${Math.round(loaded.sizeBytes / 1024)} KiB image: ${Date.now() - started} ms`);
  assert.match(loaded.dockerId, /^sha256:[0-9a-f]{64}$/);
  const info = await engineA.getImage(loaded.dockerId).inspect();
  assert.deepEqual(
    info.RepoTags,
    [local(imageRef(A, 'busybox'))],
    'no other name, in particular not the one in the tarball',
  );
  const images = await driverA.listImages(A);
  assert.equal(images.length, 1);
  assert.equal(images[0]?.name, 'busybox');
  assert.equal(images[0]?.dockerId, loaded.dockerId);
  assert.equal(images[0]?.sizeBytes, loaded.sizeBytes);
  assert.ok(!Number.isNaN(Date.parse(images[0]?.created ?? '')));
});

test('another space cannot list, run or remove it', { skip }, async () => {
  // B's own engine does not have it...
  assert.deepEqual(await engineB.listImages(), []);
  assert.deepEqual(await driverB.listImages(B), []);
  await rejectsWith(driverB.create(specFor(B, t.space(B).parent)), 'not_found');
  await rejectsWith(driverB.removeImage(B, 'busybox'), 'not_found');
  // ...and A's driver, asked for space B, does not hand out A's image: only B's names count.
  assert.deepEqual(await driverA.listImages(B), []);
  await rejectsWith(driverA.create(specFor(B, t.space(B).parent)), 'not_found');
  await rejectsWith(driverA.removeImage(B, 'busybox'), 'not_found');
  assert.equal((await driverA.listImages(A)).length, 1, 'still there for A');
  assert.ok(!(await engineA.listImages()).some((i) => (i.RepoTags ?? []).includes(imageRef(B, 'busybox'))));
});

test('a tarball naming an existing image cannot re-point that name, nor bring it along', { skip }, async () => {
  const victim = imageRef(A, 'busybox');
  const before = (await engineA.getImage(victim).inspect()).Id;
  // In A's own engine, under another name of A's.
  const evilA = await driverA.loadImage(A, 'evil', createReadStream(hostile!.path));
  assert.notEqual(evilA.dockerId, before, 'a different image');
  assert.equal((await engineA.getImage(victim).inspect()).Id, before, "A's name still points at A's image");
  assert.deepEqual((await engineA.getImage(evilA.dockerId).inspect()).RepoTags, [local(imageRef(A, 'evil'))]);
  // In B's engine: the tarball's name for A's image does not appear there either.
  const evilB = await driverB.loadImage(B, 'evil', createReadStream(hostile!.path));
  assert.equal(evilB.dockerId, evilA.dockerId, 'the same content');
  assert.deepEqual((await engineB.getImage(evilB.dockerId).inspect()).RepoTags, [local(imageRef(B, 'evil'))]);
  await assert.rejects(engineB.getImage(victim).inspect(), is404);
  assert.deepEqual(
    (await driverA.listImages(A)).map((i) => [i.name, i.dockerId]),
    [
      ['busybox', before],
      ['evil', evilA.dockerId],
    ],
  );
  await driverA.removeImage(A, 'evil');
  await driverB.removeImage(B, 'evil');
  await assert.rejects(engineA.getImage(evilA.dockerId).inspect(), is404, 'unused content goes with its last name');
  await assert.rejects(engineB.getImage(evilB.dockerId).inspect(), is404);
});

test('loading the same name twice is a conflict; another name for the same content is fine', { skip }, async () => {
  await rejectsWith(driverA.loadImage(A, 'busybox', createReadStream(tarball!.path)), 'conflict');
  const again = await driverA.loadImage(A, 'bb2', createReadStream(tarball!.path));
  const first = (await driverA.listImages(A)).find((i) => i.name === 'busybox');
  assert.equal(again.dockerId, first?.dockerId, 'content-addressed: same id');
  await driverA.removeImage(A, 'bb2');
  assert.deepEqual(
    (await driverA.listImages(A)).map((i) => i.name),
    ['busybox'],
  );
  await engineA.getImage(again.dockerId).inspect(); // the content stays for the other name
});

test('a tarball with two images is refused and neither is loaded', { skip }, async () => {
  const tags = [`ocs-test-tmp/two-${B.slice(3)}:a`, `ocs-test-tmp/two-${B.slice(3)}:b`];
  tempTags.push(...tags);
  const ids: string[] = [];
  // Made with the test image builder (dockerd): `docker save` of two images into one tarball.
  for (const [i, tag] of tags.entries())
    ids.push(await importBusyboxImage(tag, { changes: [`LABEL ocs.test.n=${i}-${B}`] }));
  const both = join(t.work, 'two.tar');
  // GET /images/get?names=…&names=… (dockerode has it; its types do not).
  const getImages = (imageBuilder as unknown as { getImages(o: { names: string[] }): Promise<NodeJS.ReadableStream> })
    .getImages;
  await pipeline(await getImages.call(imageBuilder, { names: tags }), createWriteStream(both));
  for (const tag of tags) await imageBuilder.getImage(tag).remove();

  await rejectsWith(driverB.loadImage(B, 'two', createReadStream(both)), 'invalid_request', /more than one image/);
  for (const id of ids) await assert.rejects(engineB.getImage(id).inspect(), is404, 'nothing was loaded');
  assert.deepEqual(await engineB.listImages(), []);
  assert.deepEqual(await driverB.listImages(B), []);
});

test('malformed tarballs are refused before the engine sees them', { skip }, async () => {
  const whole = await readFile(tarball!.path);
  await rejectsWith(driverB.loadImage(B, 'junk', Readable.from([Buffer.alloc(4096, 7)])), 'invalid_request');
  await rejectsWith(
    driverB.loadImage(B, 'cut', Readable.from([whole.subarray(0, Math.floor(whole.length / 2))])),
    'invalid_request',
  );
  await rejectsWith(driverB.loadImage(B, 'big', Readable.from([whole]), { maxBytes: 1024 }), 'budget_exceeded');
  await rejectsWith(driverB.loadImage(B, 'Bad/Name', Readable.from([whole])), 'invalid_request');
  assert.deepEqual(await engineB.listImages(), []);
  assert.deepEqual(await driverB.listImages(B), []);
});

test('removeImage frees the name; a missing one is not_found', { skip }, async () => {
  const id = (await driverA.listImages(A))[0]?.dockerId ?? '';
  await driverA.removeImage(A, 'busybox');
  assert.deepEqual(await driverA.listImages(A), []);
  await assert.rejects(engineA.getImage(id).inspect(), is404, 'the content went with its last name');
  await rejectsWith(driverA.removeImage(A, 'busybox'), 'not_found');
});

test('an engine that does not answer is unavailable', async () => {
  // A socket path nobody listens on: an engine that is not running.
  const offline = createContainerDriver({
    socketPath: join('/nonexistent', `ocs-${process.pid}`, 'engine.sock'),
    podman: { idMap: { base: 1_900_000_000, size: 65536 }, subnet: '10.251.255.0/26', networksDir: '/nonexistent' },
  });
  await rejectsWith(offline.listImages(A), 'unavailable');
  await rejectsWith(offline.list(A), 'unavailable');
});
