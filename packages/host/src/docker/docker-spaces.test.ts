/**
 * Reconciliation helpers against the real dockerd: listAllSpaces finds every space's objects,
 * removeAllForSpace removes exactly one space's and nothing of another's.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { createDockerDriver } from './driver.js';
import { imageRef, networkName } from './names.js';
import { busyboxTarball, cleanupSpaces, docker, dockerSkip, newSpaceId, specFor, testCgroups } from './test-support.js';

const skip = await dockerSkip();
const driver = createDockerDriver();
const A = newSpaceId();
const B = newSpaceId();
/** Has only an image: no containers, no network. */
const C = newSpaceId();
const cgroups = testCgroups();
const ids: Record<string, string[]> = { [A]: [], [B]: [] };

before(async () => {
  if (skip) return;
  const tb = await busyboxTarball();
  try {
    for (const s of [A, B, C]) await driver.loadImage(s, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
  for (const [space, n] of [
    [A, 2],
    [B, 1],
  ] as const) {
    const parent = cgroups.parentFor(space);
    for (let i = 0; i < n; i++) {
      const spec = specFor(space, parent, { name: `c${i}` });
      await driver.create(spec);
      await driver.start(space, spec.containerId);
      ids[space]?.push(spec.containerId);
    }
  }
});

after(async () => {
  if (skip) return;
  await cleanupSpaces([A, B, C]);
  cgroups.remove();
});

test(
  'listAllSpaces finds each space with its containers (others on this host are ignored here)',
  { skip },
  async () => {
    const all = await driver.listAllSpaces();
    assert.deepEqual(all.get(A), [...(ids[A] ?? [])].sort());
    assert.deepEqual(all.get(B), ids[B]);
    assert.deepEqual(all.get(C), [], 'a space with only an image is found too');
  },
);

test('removeAllForSpace removes exactly that space, idempotently', { skip }, async () => {
  const sharedImage = (await docker.getImage(imageRef(B, 'busybox')).inspect()).Id;
  await driver.removeAllForSpace(A);
  await driver.removeAllForSpace(A);

  const all = await driver.listAllSpaces();
  assert.ok(!all.has(A));
  assert.deepEqual(await driver.list(A), []);
  assert.deepEqual(await driver.listImages(A), []);
  assert.deepEqual(await docker.listContainers({ all: true, filters: { label: [`ocs.space=${A}`] } }), []);
  await assert.rejects(
    docker.getNetwork(networkName(A)).inspect(),
    (e: { statusCode?: number }) => e.statusCode === 404,
  );

  // B and C untouched, including the image content A shared with them.
  assert.deepEqual(all.get(B), ids[B]);
  assert.deepEqual(all.get(C), []);
  assert.equal((await driver.inspect(B, ids[B]?.[0] ?? '')).state, 'running');
  assert.equal((await docker.getImage(imageRef(B, 'busybox')).inspect()).Id, sharedImage);
  await docker.getNetwork(networkName(B)).inspect();

  await driver.removeAllForSpace(C);
  assert.ok(!(await driver.listAllSpaces()).has(C));
  assert.equal((await driver.listImages(B)).length, 1);
});
