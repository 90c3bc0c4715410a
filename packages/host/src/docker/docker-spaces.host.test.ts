/**
 * Reconciliation helpers against spaces' own podman engines: listAllSpaces finds every space's
 * objects in an engine, removeAllForSpace removes exactly one space's and nothing of another's,
 * also when another space's objects were found in the same engine.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import type Dockerode from 'dockerode';
import { imageRef, networkName } from './names.js';
import { busyboxTarball, engineSkip, newSpaceId, specFor, testEngines, type TestEngines } from './test-support.js';
import type { DockerDriver } from './types.js';

const skip = await engineSkip();
/** A's engine holds A's containers and image, and an image of C's (what a reconcile may find). */
const A = newSpaceId();
const B = newSpaceId();
/** Has only an image: no containers, no network. */
const C = newSpaceId();
let t: TestEngines;
let driverA: DockerDriver;
let driverB: DockerDriver;
let engineA: Dockerode;
const ids: Record<string, string[]> = { [A]: [], [B]: [] };
const is404 = (e: { statusCode?: number }) => e.statusCode === 404;

before(async () => {
  if (skip) return;
  t = await testEngines();
  driverA = await t.driver(A);
  driverB = await t.driver(B);
  engineA = await t.docker(A);
  const tb = await busyboxTarball();
  try {
    for (const s of [A, C]) await driverA.loadImage(s, 'busybox', createReadStream(tb.path));
    await driverB.loadImage(B, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
  for (const [space, driver, n] of [
    [A, driverA, 2],
    [B, driverB, 1],
  ] as const) {
    for (let i = 0; i < n; i++) {
      const spec = specFor(space, t.space(space).parent, { name: `c${i}` });
      await driver.create(spec);
      await driver.start(space, spec.containerId);
      ids[space]?.push(spec.containerId);
    }
  }
});

after(async () => {
  if (skip) return;
  await t.cleanup();
});

test("listAllSpaces finds each space of the engine with its containers, and only the engine's", { skip }, async () => {
  const inA = await driverA.listAllSpaces();
  assert.deepEqual([...inA.keys()].sort(), [A, C].sort());
  assert.deepEqual(inA.get(A), [...(ids[A] ?? [])].sort());
  assert.deepEqual(inA.get(C), [], 'a space with only an image is found too');
  const inB = await driverB.listAllSpaces();
  assert.deepEqual([...inB.entries()], [[B, ids[B]]]);
});

test('removeAllForSpace removes exactly that space, idempotently', { skip }, async () => {
  const sharedImage = (await engineA.getImage(imageRef(C, 'busybox')).inspect()).Id;
  assert.equal((await engineA.getImage(imageRef(A, 'busybox')).inspect()).Id, sharedImage, 'one content, two names');
  await driverA.removeAllForSpace(A);
  await driverA.removeAllForSpace(A);
  // Asking B's engine to remove A's objects finds none and touches nothing of B's.
  await driverB.removeAllForSpace(A);

  const inA = await driverA.listAllSpaces();
  assert.ok(!inA.has(A));
  assert.deepEqual(await driverA.list(A), []);
  assert.deepEqual(await driverA.listImages(A), []);
  assert.deepEqual(await engineA.listContainers({ all: true, filters: { label: [`ocs.space=${A}`] } }), []);
  await assert.rejects(engineA.getNetwork(networkName(A)).inspect(), is404);

  // C (in the same engine) and B (in its own) untouched, including the content A's name shared with C's.
  assert.deepEqual(inA.get(C), []);
  assert.equal((await engineA.getImage(imageRef(C, 'busybox')).inspect()).Id, sharedImage);
  assert.deepEqual((await driverB.listAllSpaces()).get(B), ids[B]);
  assert.equal((await driverB.inspect(B, ids[B]?.[0] ?? '')).state, 'running');
  await (await t.docker(B)).getNetwork(networkName(B)).inspect();
  assert.equal((await driverB.listImages(B)).length, 1);

  await driverA.removeAllForSpace(C);
  assert.deepEqual([...(await driverA.listAllSpaces()).keys()], []);
  await assert.rejects(engineA.getImage(sharedImage).inspect(), is404, 'the content went with its last name');
  assert.equal((await driverB.listImages(B)).length, 1);
});
