/**
 * What a stopped daemon and a destroyed space leave on the host: nothing of their own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { lockSpace, reserveOwned, startTestNode, MiB, type TestNode } from './harness.js';

async function reserve(t: TestNode) {
  const { owner, space, api } = await reserveOwned(
    t,
    { cpuMillicores: 500, memoryBytes: 128 * MiB, storageBytes: 32 * MiB },
    ['monitor'],
    600,
  );
  // A first request starts the space process: the supervisor writes its run directory.
  await api.call('GET', `${space.apiBase}/status`);
  return { owner, space, runDir: join(t.config.runDir, 'spaces', space.id) };
}

/** Mount points at or below `dir` in this process's mount namespace (field 5 of mountinfo; test paths need no unescaping). */
function mountsAt(dir: string): string[] {
  const root = realpathSync(dir);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((m) => m === root || m.startsWith(`${root}/`));
}

test('a destroyed space leaves no run directory; after stop nothing is mounted under the storage root', async () => {
  let t = await startTestNode();
  let stopped = false;
  try {
    const gone = await reserve(t);
    assert.ok(existsSync(join(gone.runDir, 'config.json')), 'the supervisor wrote the config');
    const del = await t.client({ roles: ['spaces'], owner: gone.owner }).send('DELETE', `/v1/spaces/${gone.space.id}`);
    assert.equal(del.status, 204, JSON.stringify(del.body));
    assert.equal(existsSync(gone.runDir), false, "the destroyed space's run directory is gone");

    // A locked space stays on the host, with nothing mounted.
    const kept = await reserve(t);
    const locked = await lockSpace(t.client({ roles: ['spaces'], owner: kept.owner }), kept.space.id);
    assert.equal(locked.state, 'locked');
    assert.notDeepEqual(mountsAt(t.config.storage.root), [], "the driver's own mount is there while the daemon runs");

    await t.stop({ keepHost: true });
    stopped = true;
    assert.deepEqual(mountsAt(t.config.storage.root), [], 'mounted under the storage root after stop');
    assert.deepEqual(await t.storage.list(), [kept.space.id], 'the locked space is kept');
  } finally {
    // A node on the same state removes what this run made, exactly as any other test's stop.
    if (stopped) t = await startTestNode({ reuse: t.reuse });
    await t.stop();
  }
});
