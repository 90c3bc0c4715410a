/**
 * A move cut short at each of its steps by a `kill -9` of the node that runs that step (the
 * daemon's failpoints, `node-daemon/src/failpoints.ts`: the crash happens exactly between the two
 * steps a point names). Two real daemons on one machine, each keeping its port across restarts.
 * After each crash the killed node starts again, and the space must end on exactly one node,
 * usable there (it opens with the owner's key and holds the file written before the move), and
 * the other node must hold nothing of it (no record that stands, no image, no mount, no cgroup):
 * never on neither, never unlockable on both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { generatePrivateKey, isOcsError, type CreateSpaceResponse, type Space } from '@ocs/protocol';
import { moveSpace } from '@ocs/client';
import { waitFor } from './harness.js';
import { twoNodes, type Node } from './two-nodes.js';

const MiB = 1024 ** 2;

/**
 * Each point, whose daemon dies there (`a` the source, `b` the target) and where the space ends:
 * on the source until the target has it whole and the source wrote `committing`, on the target
 * from then on.
 */
const POINTS = [
  { point: 'import.opened', dies: 'b', endsOn: 'a' },
  { point: 'move.locked', dies: 'a', endsOn: 'a' },
  { point: 'move.moving', dies: 'a', endsOn: 'a' },
  { point: 'import.receiving', dies: 'b', endsOn: 'a' },
  { point: 'import.checked', dies: 'b', endsOn: 'a' },
  { point: 'import.prepared', dies: 'b', endsOn: 'a' },
  { point: 'move.sent', dies: 'a', endsOn: 'a' },
  { point: 'move.committing', dies: 'a', endsOn: 'b' },
  { point: 'import.committed', dies: 'b', endsOn: 'b' },
  { point: 'move.committed', dies: 'a', endsOn: 'b' },
  { point: 'move.torn-down', dies: 'a', endsOn: 'b' },
  // A move the target refuses (no import opened there): the source dies once it is locked again.
  { point: 'move.aborted', dies: 'a', endsOn: 'a', noImport: true },
] as const;

/** The space as `n` answers it: its record, `moved` for a tombstone, `none` when it has none. */
async function stateOn(n: Node, id: string): Promise<Space['state'] | 'moved' | 'none' | 'unreachable'> {
  try {
    return (await n.client.spaces.get(id)).state;
  } catch (err) {
    if (isOcsError(err) && err.code === 'space_moved') return 'moved';
    if (isOcsError(err) && err.code === 'not_found') return 'none';
    if (isOcsError(err)) throw err;
    return 'unreachable'; // starting again
  }
}

/** Nothing of the space on the node's host: its image, its mount, its cgroup. */
function assertNoTrace(n: Node, id: string, why: string): void {
  const root = n.config.storage.root;
  assert.equal(existsSync(join(root, 'images', `${id}.img`)), false, `${why}: an image`);
  const images = existsSync(join(root, 'images')) ? readdirSync(join(root, 'images')) : [];
  assert.equal(
    images.some((f) => f.startsWith(id)),
    false,
    `${why}: an image part`,
  );
  assert.equal(existsSync(join(root, 'mnt', id)), false, `${why}: a mount directory`);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(join(root, 'mnt', id)), false, `${why}: a mount`);
  assert.equal(existsSync(`/sys/fs/cgroup/memory/${n.dir.parent}/${id}.space`), false, `${why}: a cgroup`);
}

test('kill -9 of either node at each step of a move: the space ends on exactly one node, usable there, and the other keeps nothing of it', async () => {
  const owner = generatePrivateKey();
  const nodes = await twoNodes(['mca', 'mcb'], owner, 'org-mc', ['spaces', 'storage']);
  const { a, b } = nodes;
  const failures: string[] = [];
  try {
    for (const entry of POINTS) {
      const { point, dies, endsOn } = entry;
      const killed = dies === 'a' ? a : b;
      await nodes.restart(killed, { OCS_FAILPOINTS: point });
      const made = await a.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 64 * MiB },
        leaseSeconds: 3600,
      });
      const id = made.body.space.id;
      nodes.spaces.add(id);
      const marker = `OCS-MC-${randomBytes(8).toString('hex')}`;
      await a.client.space(id).files.upload('marker', Buffer.from(marker));

      const exited = new Promise<void>((resolve) => killed.daemon.child.once('exit', () => resolve()));
      const infoB = await b.client.node.info();
      const move =
        'noImport' in entry
          ? a.client.spaces.move(id, { url: b.daemon.url, fingerprint: infoB.tlsFingerprint })
          : moveSpace(a.client, b.client, id);
      const moved = move.then(
        () => 'answered',
        (err: unknown) => (isOcsError(err) ? err.code : 'cut'),
      );
      await exited;
      await nodes.restart(killed);
      await moved;

      // Settled: on the one node, as it ends there (the source aborts, or commits on).
      const settled = await waitFor(
        `${point}: the space settles`,
        async () => {
          const [onA, onB] = [await stateOn(a, id), await stateOn(b, id)];
          if (endsOn === 'a' && onB === 'none' && (onA === 'locked' || onA === 'active')) return { onA, onB };
          if (endsOn === 'b' && onA === 'moved' && onB === 'locked') return { onA, onB };
          return undefined;
        },
        60_000,
      ).catch((err: unknown) => {
        failures.push(`${point}: ${(err as Error).message}`);
        return undefined;
      });
      if (!settled) continue;
      const [here, other] = endsOn === 'a' ? [a, b] : [b, a];
      assertNoTrace(other, id, `${point}: ${endsOn === 'a' ? 'B' : 'A'} keeps`);

      // Usable where it is: it opens with the owner's key and holds what was written.
      if ((await stateOn(here, id)) === 'locked') await here.client.spaces.unlock(id, made.body.wrappedKey);
      const files = join(here.config.storage.root, 'mnt', id, 'data', 'space', 'files');
      const found = readdirSync(files).some((f) => readFileSync(join(files, f), 'utf8').includes(marker));
      assert.ok(found, `${point}: the file written before the move is on ${endsOn}`);
      await here.client.spaces.destroy(id);
    }
  } finally {
    await nodes.close();
  }
  assert.deepEqual(failures, []);
});
