/**
 * The typed SDK against a real node, its space process and its container engine: an owner's
 * whole journey through typed operations only, over a handful of kept-alive connections pinned
 * by fingerprint alone.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { buildBusyboxImage } from '@ocs/host/testing';
import { OcsClient } from '@ocs/client';
import { OcsError, generatePrivateKey } from '@ocs/protocol';
import { startTestNode, waitFor, MiB, type TestNode } from './harness.js';

let t: TestNode;
let imagePath: string;

before(async () => {
  t = await startTestNode({ workloads: true });
  imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
});
after(async () => {
  await t.stop();
  rmSync(dirname(imagePath), { recursive: true, force: true });
});

const rejectsWith = (p: Promise<unknown>, code: string) =>
  assert.rejects(p, (e: unknown) => e instanceof OcsError && e.code === code);

test('an owner reserves, loads an image, runs a container, reads its log, locks, unlocks and destroys, typed', async () => {
  const owner = generatePrivateKey();
  const token = await t.token(['spaces', 'storage', 'containers', 'monitor']);
  const c = new OcsClient({
    url: t.node.url,
    fingerprint: t.node.tls.fingerprint,
    token: () => token,
    ownerKey: owner,
  });
  try {
    const { space, wrappedKey } = await c.spaces.reserve({
      resources: { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 128 * MiB, pids: 256 },
      leaseSeconds: 600,
    });
    assert.equal(space.ownerFingerprint, owner.publicKey.fingerprint());
    const s = c.space(space.id);
    assert.equal((await s.status()).spaceId, space.id);

    const progress: number[] = [];
    const image = await s.images.load('busybox', { path: imagePath }, { onProgress: (sent) => progress.push(sent) });
    assert.equal(image.name, 'busybox');
    assert.equal(progress.at(-1), statSync(imagePath).size);
    await s.volumes.create({ name: 'data', sizeBytes: 16 * MiB });
    const ctr = await s.containers.create({
      name: 'hello',
      image: 'busybox',
      command: ['sh', '-c', 'echo hello from the sdk; echo done > /data/out'],
      mounts: [{ volume: 'data', target: '/data' }],
      cpuMillicores: 250,
      memoryBytes: 64 * MiB,
    });
    assert.equal(ctr.name, 'hello');
    await waitFor('the container to exit', async () =>
      (await s.containers.get('hello')).state === 'exited' ? true : undefined,
    );
    assert.match((await s.containers.logs('hello', { tail: 10 })).text, /hello from the sdk/);
    assert.deepEqual(
      (await s.containers.list()).containers.map((x) => x.name),
      ['hello'],
    );
    // The catalogue's query schema holds on the server too.
    await rejectsWith(s.containers.logs('hello', { tail: 0 }), 'invalid_request');

    assert.equal((await c.spaces.lock(space.id)).state, 'locked');
    await rejectsWith(s.status(), 'space_locked');
    assert.equal((await c.spaces.unlock(space.id, wrappedKey)).state, 'active');
    assert.equal((await s.volumes.list()).volumes[0]?.name, 'data');
    await s.containers.delete('hello');
    await c.spaces.destroy(space.id);
    await rejectsWith(c.spaces.get(space.id), 'not_found');
    // Every request above went over a few kept-alive connections, not one each.
    assert.ok(c.connections <= 3, `${c.connections} connections`);
  } finally {
    c.close();
  }
});

test('another key cannot act on the space through the SDK either', async () => {
  const owner = generatePrivateKey();
  const token = await t.token(['spaces', 'storage', 'containers']);
  const mine = new OcsClient({ url: t.node.url, ca: t.node.tls.cert, token: () => token, ownerKey: owner });
  const theirs = new OcsClient({
    url: t.node.url,
    ca: t.node.tls.cert,
    token: () => token,
    ownerKey: generatePrivateKey(),
  });
  try {
    const { space } = await mine.spaces.reserve({
      resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 16 * MiB },
      leaseSeconds: 600,
    });
    await rejectsWith(theirs.spaces.lock(space.id), 'not_owner');
    await rejectsWith(theirs.space(space.id).volumes.list(), 'not_owner');
    await mine.spaces.destroy(space.id);
  } finally {
    mine.close();
    theirs.close();
  }
});
