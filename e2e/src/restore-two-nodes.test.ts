/**
 * A space taken from one node and restored on another, two real daemons on one machine, each
 * with its own state, port, storage root, cgroup parent, uid range, subordinate ids, subnets and
 * ports: the owner writes markers into a volume, a container's root filesystem and its log, backs
 * the space up on node A and restores it on node B; unlocked there, every marker reads back, the
 * container runs under B's ids, nothing in the space is owned by an id of A's; the archive holds
 * no marker and not the space key. Then the space goes from A and leaves nothing there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildBusyboxImage } from '@ocs/host/testing';
import { generatePrivateKey, unwrapKey, type Container, type CreateSpaceResponse } from '@ocs/protocol';
import { saveArchive } from '@ocs/client';
import { ownedBy, ownersUnder, waitFor, webWithVolume, lockSpace } from './harness.js';
import { SUBIDS, SUBIDS_OF, containerUids, twoNodes } from './two-nodes.js';

const MiB = 1024 ** 2;

const SCRIPT =
  'if [ -f /tmp/marker ]; then echo "again: $(cat /tmp/marker)"; else echo OCS-2N-ROOTFS > /tmp/marker; ' +
  'echo OCS-2N-LOG; fi; echo OCS-2N-VOLUME > /data/marker; sleep 1000';

test('a space backed up on node A restores on node B: markers, a running container, B’s ids only; A keeps nothing', async () => {
  const owner = generatePrivateKey();
  const nodes = await twoNodes(['twoa', 'twob'], owner, 'org-2n');
  const { spaces } = nodes;
  const [onA, onB] = [nodes.a.client, nodes.b.client];
  const [configA, configB] = [nodes.a.config, nodes.b.config];
  const dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-2n-'));
  let imagePath: string | undefined;
  try {
    const made = await onA.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 500, memoryBytes: 512 * MiB, storageBytes: 192 * MiB },
      leaseSeconds: 3600,
    });
    const space = made.body.space;
    spaces.add(space.id);
    const base = space.apiBase;
    imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
    await webWithVolume(onA, base, readFileSync(imagePath), SCRIPT);
    await waitFor('the first run on A', async () => {
      const r = await onA.call<{ text: string }>('GET', `${base}/containers/web/logs?tail=10`);
      return r.body.text.includes('OCS-2N-LOG') ? true : undefined;
    });

    // The backup, taken on A: no marker and no key in it.
    await lockSpace(onA, space.id);
    const file = join(dir, 'space.ocsa');
    await saveArchive(await onA.spaces.export(space.id), file, owner);
    const bytes = readFileSync(file);
    const key = await unwrapKey(made.body.wrappedKey, owner);
    for (const needle of ['OCS-2N-ROOTFS', 'OCS-2N-LOG', 'OCS-2N-VOLUME'].map((m) => Buffer.from(m)))
      assert.equal(bytes.includes(needle), false, `${needle.toString()} is in the archive`);
    assert.equal(bytes.includes(Buffer.from(key)), false, 'the space key is in the archive');

    // B already holds a space that runs a container: the one restored must share none of its ids.
    const neighbour = (
      await onB.call<CreateSpaceResponse>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 64 * MiB },
        leaseSeconds: 3600,
      })
    ).body.space;
    spaces.add(neighbour.id);
    await onB.call('POST', `${neighbour.apiBase}/images/busybox`, undefined, { raw: readFileSync(imagePath) });
    await onB.call('POST', `${neighbour.apiBase}/containers`, {
      name: 'n',
      image: 'busybox',
      command: ['sleep', '1000'],
      cpuMillicores: 100,
      memoryBytes: 16 * MiB,
    });

    // Restored on B, unlocked there with the owner's same key.
    const fork = await onB.spaces.restore(file, { leaseSeconds: 3600 });
    spaces.add(fork.id);
    assert.equal(fork.state, 'locked');
    const unlocked = await onB.spaces.unlock(fork.id, made.body.wrappedKey);
    assert.equal(unlocked.state, 'active');
    const forkBase = `/v1/spaces/${fork.id}/api`;
    const log = await waitFor('the second run on B', async () => {
      const r = await onB.call<{ text: string }>('GET', `${forkBase}/containers/web/logs?tail=20`);
      return r.body.text.includes('again:') ? r.body.text : undefined;
    });
    assert.match(log, /again: OCS-2N-ROOTFS/, 'the root filesystem came with it');
    assert.match(log, /OCS-2N-LOG/, 'the log came with it');
    assert.equal((await onB.call<Container>('GET', `${forkBase}/containers/web`)).body.state, 'running');

    // Only B's ids own anything of it; the volume's file written on A reads back on B.
    const rootB = join(configB.storage.root, 'mnt', fork.id);
    const volumes = await onB.call<{ volumes: { id: string }[] }>('GET', `${forkBase}/volumes`);
    assert.equal(
      readFileSync(join(rootB, 'volumes', volumes.body.volumes[0]!.id, 'marker'), 'utf8').trim(),
      'OCS-2N-VOLUME',
    );
    const [uidA, uidB] = [nodes.a.uidBase, nodes.b.uidBase];
    const seen = ownersUnder(rootB);
    for (const id of seen) {
      if (id >= uidA && id < uidA + 2000)
        assert.fail(`${id}, one of A's space or QEMU uids, owns a file on B: ${ownedBy(rootB, id)}`);
      assert.ok(
        id < SUBIDS_OF[0]! || id >= SUBIDS_OF[0]! + 1000 * SUBIDS,
        `${id}, one of A's subordinate ids, owns a file on B`,
      );
    }
    assert.ok(
      [...seen].some((id) => id >= uidB && id < uidB + 1000),
      "B's space uid owns its home",
    );
    // Its subnet and its containers' uids on B are its own, none of its neighbour's.
    const subnet = async (id: string) =>
      (await onB.call<{ subnet?: string }>('GET', `/v1/spaces/${id}/api/network`)).body.subnet;
    const [forkNet, neighbourNet] = [await subnet(fork.id), await subnet(neighbour.id)];
    assert.ok(forkNet && neighbourNet && forkNet !== neighbourNet, `${forkNet} ${neighbourNet}`);
    const [forkUids, neighbourUids] = [
      containerUids(nodes.b.dir.parent, fork.id),
      containerUids(nodes.b.dir.parent, neighbour.id),
    ];
    assert.ok(forkUids.size > 0 && neighbourUids.size > 0);
    for (const u of forkUids) {
      assert.equal(neighbourUids.has(u), false, `uid ${u} runs in both spaces`);
      assert.ok(u >= SUBIDS_OF[1]! && u < SUBIDS_OF[1]! + 1000 * SUBIDS, `uid ${u} is not one of B's subordinate ids`);
    }

    // The space leaves A: nothing of it is left there but the record of its destruction.
    await onA.call('DELETE', `/v1/spaces/${space.id}`);
    assert.deepEqual(readdirSync(join(configA.storage.root, 'images')), []);
    assert.equal(existsSync(join(configA.storage.root, 'mnt', space.id)), false);
    assert.equal(
      readFileSync('/proc/self/mountinfo', 'utf8').includes(join(configA.storage.root, 'mnt', space.id)),
      false,
    );
    assert.equal(existsSync(`/sys/fs/cgroup/memory/${nodes.a.dir.parent}/${space.id}.space`), false);
    // And B's copy runs on.
    assert.equal((await onB.call<Container>('GET', `${forkBase}/containers/web`)).body.state, 'running');
    await onB.call('DELETE', `/v1/spaces/${fork.id}`);
  } finally {
    await nodes.close();
    if (imagePath) rmSync(dirname(imagePath), { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});
