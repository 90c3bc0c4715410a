/**
 * A lock of a real space answers before its space has shut down: `locking` while a container
 * sits in its stop grace (it ignores SIGTERM), and while a file is held open in its storage
 * (fscrypt cannot evict a key from files in use); `locked` once the container was killed, or
 * the file closed. Nothing of the space opens meanwhile, and once locked it is locked on the
 * host (no mount) and opens again with the owner's key.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildBusyboxImage } from '@ocs/host/testing';
import { unwrapKey, type Space } from '@ocs/protocol';
import { MiB, reserveOwned, startTestNode, waitFor, type TestNode } from './harness.js';

let t: TestNode;
let imagePath: string;
before(async () => {
  t = await startTestNode({ workloads: true });
  imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
});
after(async () => {
  await t?.stop();
  if (imagePath) rmSync(dirname(imagePath), { recursive: true, force: true });
});

const mounted = (id: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8').includes(join(t.config.storage.root, 'mnt', id));

async function until(api: { call<T>(m: string, p: string): Promise<{ body: T }> }, id: string, state: string) {
  return waitFor(`${id} ${state}`, async () => {
    const s = (await api.call<Space>('GET', `/v1/spaces/${id}`)).body;
    return s.state === state ? s : undefined;
  });
}

test('a container in its stop grace: the lock answers locking, nothing opens, then it is locked and opens again', async () => {
  const a = await reserveOwned(t, { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes: 128 * MiB }, [
    'spaces',
    'storage',
    'containers',
  ]);
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: readFileSync(imagePath) });
  await a.api.call('POST', `${a.base}/containers`, {
    name: 'stubborn',
    image: 'busybox',
    // SIGTERM ignored: the lock waits out the stop grace (3 s), then kills it.
    command: ['sh', '-c', 'trap "" TERM; while true; do sleep 1; done'],
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
  });
  const answered = (await a.api.call<Space>('POST', `/v1/spaces/${a.space.id}/lock`, {})).body;
  assert.equal(answered.state, 'locking');
  assert.equal(answered.locking?.step, 'workloads');

  const unlock = await a.api.send('POST', `/v1/spaces/${a.space.id}/unlock`, { sealedKey: 'AAAA' });
  assert.equal(unlock.status, 409);
  const inside = await a.api.send('GET', `${a.base}/status`);
  assert.equal((inside.body as { error: { code: string } }).error.code, 'space_locked');

  await until(a.api, a.space.id, 'locked');
  assert.equal(mounted(a.space.id), false, 'locked on the host: not mounted');
  const key = await unwrapKey(a.wrappedKey, a.owner);
  const opened = await a.api.call<Space>('POST', `/v1/spaces/${a.space.id}/unlock`, { sealedKey: await t.seal(key) });
  key.fill(0);
  assert.equal(opened.body.state, 'active');
  await a.api.call('DELETE', `/v1/spaces/${a.space.id}`);
});

test('a file held open in the storage: the lock says the key is still in use, and ends once the file is closed', async () => {
  const a = await reserveOwned(t, { cpuMillicores: 200, memoryBytes: 64 * MiB, storageBytes: 64 * MiB }, [
    'spaces',
    'storage',
  ]);
  const info = await t.storage.info(a.space.id);
  // Root on the host holds a file of the space open, as a stray process of the farmer's might.
  const fd = openSync(join(info.mountpoint, 'held-open.txt'), 'w');
  let closed = false;
  try {
    writeSync(fd, 'in use');
    const answered = (await a.api.call<Space>('POST', `/v1/spaces/${a.space.id}/lock`, {})).body;
    assert.equal(answered.state, 'locking');
    const stuck = await waitFor(`${a.space.id}: the lock says why it waits`, async () => {
      const s = (await a.api.call<Space>('GET', `/v1/spaces/${a.space.id}`)).body;
      return s.locking?.error ? s : undefined;
    });
    assert.equal(stuck.state, 'locking');
    assert.equal(stuck.locking?.step, 'storage');
    assert.match(stuck.locking?.error ?? '', /a file of the space is still open/);
    closeSync(fd);
    closed = true;
    await until(a.api, a.space.id, 'locked');
    assert.equal(mounted(a.space.id), false, 'locked on the host: not mounted');
  } finally {
    if (!closed) closeSync(fd);
  }
  await a.api.call('DELETE', `/v1/spaces/${a.space.id}`);
});
