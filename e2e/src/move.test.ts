/**
 * A space moved from one node to another, node to node, two real daemons on one machine (each
 * with its own state, port, storage root, cgroup parent, uid range, subordinate ids, subnets and
 * ports): the owner writes markers into a volume, a container's root filesystem and its log on
 * A and moves the space to B with the SDK's `moveSpace`. It keeps its id; on B it waits locked,
 * holding no marker and not its key at rest, and opens with the same wrapped key: every marker
 * reads back and the container runs under B's ids. A keeps nothing of it but a tombstone signed
 * by A, and its capacity is free there. And a move that cannot happen leaves the space on A.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes, verify as nativeVerify, createPublicKey } from 'node:crypto';
import { buildBusyboxImage } from '@ocs/host/testing';
import {
  generatePrivateKey,
  isOcsError,
  tombstoneSigningInput,
  unwrapKey,
  type Container,
  type CreateSpaceResponse,
  type NodeInfo,
  type PublishedPort,
} from '@ocs/protocol';
import { moveSpace } from '@ocs/client';
import { daemonClient } from './daemon-process.js';
import { ownedBy, ownersUnder, waitFor, webWithVolume } from './harness.js';
import { SUBIDS, SUBIDS_OF, containerUids, twoNodes } from './two-nodes.js';

const MiB = 1024 ** 2;
const SCRIPT =
  'if [ -f /tmp/marker ]; then echo "again: $(cat /tmp/marker)"; else echo OCS-MV-ROOTFS > /tmp/marker; ' +
  'echo OCS-MV-LOG; fi; echo OCS-MV-VOLUME > /data/marker; sleep 1000';

const refusedWith = (code: string) => (err: unknown) => isOcsError(err) && err.code === code;

test('a space moved from node A to node B and back: same id and key, markers and a running container on B; A keeps a signed tombstone only', async () => {
  const owner = generatePrivateKey();
  const nodes = await twoNodes(['mva', 'mvb'], owner, 'org-mv');
  const { a, b } = nodes;
  let imagePath: string | undefined;
  try {
    const made = await a.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 500, memoryBytes: 512 * MiB, storageBytes: 192 * MiB, ports: 2 },
      leaseSeconds: 3600,
    });
    const space = made.body.space;
    nodes.spaces.add(space.id);
    const base = space.apiBase;
    imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
    await webWithVolume(a.client, base, readFileSync(imagePath), SCRIPT);
    await waitFor('the first run on A', async () => {
      const r = await a.client.call<{ text: string }>('GET', `${base}/containers/web/logs?tail=10`);
      return r.body.text.includes('OCS-MV-LOG') ? true : undefined;
    });
    const publishedOnA = (
      await a.client.call<PublishedPort>('POST', `${base}/network/ports`, {
        target: { kind: 'container', name: 'web' },
        port: 8080,
      })
    ).body;
    assert.ok(publishedOnA.hostPort >= 32_000 && publishedOnA.hostPort <= 32_099, 'a port of A’s range');
    const usedBefore = (await a.client.node.info()).capacity.used;

    // B holds a space of its own, which runs a container and publishes a port.
    const neighbour = (
      await b.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 64 * MiB, ports: 1 },
        leaseSeconds: 3600,
      })
    ).body.space;
    nodes.spaces.add(neighbour.id);
    await b.client.call('POST', `${neighbour.apiBase}/images/busybox`, undefined, { raw: readFileSync(imagePath) });
    await b.client.call('POST', `${neighbour.apiBase}/containers`, {
      name: 'n',
      image: 'busybox',
      command: ['sleep', '1000'],
      cpuMillicores: 100,
      memoryBytes: 16 * MiB,
    });
    const neighbourPort = (
      await b.client.call<PublishedPort>('POST', `${neighbour.apiBase}/network/ports`, {
        target: { kind: 'container', name: 'n' },
        port: 8080,
      })
    ).body.hostPort;

    const usedOnB = (await b.client.node.info()).capacity.used;

    // Moved while it runs: the move locks it first.
    const tombstone = await moveSpace(a.client, b.client, space.id);
    assert.equal(tombstone.spaceId, space.id);
    assert.equal(tombstone.to!.url, b.daemon.url);

    // On B: the same id, locked, its image at rest holding no marker and not the key.
    const there = await b.client.spaces.get(space.id);
    assert.equal(there.state, 'locked');
    assert.equal(there.ownerKey, owner.publicKey.toBase64url());
    const image = readFileSync(join(b.config.storage.root, 'images', `${space.id}.img`));
    for (const needle of ['OCS-MV-ROOTFS', 'OCS-MV-LOG', 'OCS-MV-VOLUME'].map((m) => Buffer.from(m)))
      assert.equal(image.includes(needle), false, `${needle.toString()} lies in B's image at rest`);
    const key = await unwrapKey(made.body.wrappedKey, owner);
    assert.equal(image.includes(Buffer.from(key)), false, 'the space key lies in the image');

    // On A: a tombstone, signed by A's identity key, and nothing else of it.
    const infoA: NodeInfo = await a.client.node.info();
    await assert.rejects(a.client.spaces.get(space.id), (err: unknown) => {
      if (!refusedWith('space_moved')(err)) return false;
      const t = (err as { details: typeof tombstone }).details;
      assert.deepEqual(t, tombstone);
      const pub = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: infoA.identityKey }, format: 'jwk' });
      const { signature, ...signed } = t;
      assert.ok(nativeVerify(null, tombstoneSigningInput(signed), pub, Buffer.from(signature, 'base64url')));
      return true;
    });
    // Another org learns nothing of it, not even where it went.
    const other = daemonClient(a.config.stateDir, a.daemon, { roles: ['spaces'], org: 'org-other' });
    await assert.rejects(other.spaces.get(space.id), refusedWith('not_found'));
    other.close();
    assert.deepEqual(readdirSync(join(a.config.storage.root, 'images')), []);
    assert.equal(existsSync(join(a.config.storage.root, 'mnt', space.id)), false);
    assert.equal(
      readFileSync('/proc/self/mountinfo', 'utf8').includes(join(a.config.storage.root, 'mnt', space.id)),
      false,
    );
    assert.equal(existsSync(`/sys/fs/cgroup/memory/${a.dir.parent}/${space.id}.space`), false);
    assert.deepEqual(infoA.capacity.used.cpuMillicores, usedBefore.cpuMillicores - 500, "A's capacity is free");
    assert.equal(
      (await b.client.node.info()).capacity.used.cpuMillicores,
      usedOnB.cpuMillicores + 500,
      "B's ledger counts it",
    );

    // Unlocked on B with the owner's same key: every marker reads back, the container runs.
    const unlocked = await b.client.spaces.unlock(space.id, made.body.wrappedKey);
    assert.equal(unlocked.state, 'active');
    const log = await waitFor('the second run, on B', async () => {
      const r = await b.client.call<{ text: string }>('GET', `${base}/containers/web/logs?tail=20`);
      return r.body.text.includes('again:') ? r.body.text : undefined;
    });
    assert.match(log, /again: OCS-MV-ROOTFS/, 'the root filesystem came with it');
    assert.match(log, /OCS-MV-LOG/, 'the log came with it');
    assert.equal((await b.client.call<Container>('GET', `${base}/containers/web`)).body.state, 'running');
    const rootB = join(b.config.storage.root, 'mnt', space.id);
    const volumes = await b.client.call<{ volumes: { id: string }[] }>('GET', `${base}/volumes`);
    assert.equal(
      readFileSync(join(rootB, 'volumes', volumes.body.volumes[0]!.id, 'marker'), 'utf8').trim(),
      'OCS-MV-VOLUME',
    );
    for (const id of ownersUnder(rootB)) {
      if (id >= a.uidBase && id < a.uidBase + 2000)
        assert.fail(`${id}, one of A's space or QEMU uids, owns a file on B: ${ownedBy(rootB, id)}`);
      assert.ok(id < SUBIDS_OF[0] || id >= SUBIDS_OF[0] + 1000 * SUBIDS, `${id}, one of A's subordinate ids`);
    }
    const neighbourUids = containerUids(b.dir.parent, neighbour.id);
    const movedUids = containerUids(b.dir.parent, space.id);
    assert.ok(movedUids.size > 0 && neighbourUids.size > 0);
    for (const u of movedUids) {
      assert.ok(u >= SUBIDS_OF[1] && u < SUBIDS_OF[1] + 1000 * SUBIDS, `uid ${u} is not one of B's subordinate ids`);
      assert.equal(neighbourUids.has(u), false, `uid ${u} runs in both spaces`);
    }
    // Its network and its published port are B's, and none of its neighbour's.
    const networkOf = async (apiBase: string) =>
      (await b.client.call<{ subnet?: string; published: PublishedPort[] }>('GET', `${apiBase}/network`)).body;
    const [moved, beside] = [await networkOf(base), await networkOf(neighbour.apiBase)];
    assert.ok(moved.subnet && beside.subnet && moved.subnet !== beside.subnet, `${moved.subnet} ${beside.subnet}`);
    assert.equal(moved.published.length, 1, 'what it published came with it');
    const publishedOnB = moved.published[0]!;
    assert.equal(publishedOnB.port, 8080);
    assert.ok(publishedOnB.hostPort >= 32_100 && publishedOnB.hostPort <= 32_199, 'published on a port of B’s range');
    assert.notEqual(publishedOnB.hostPort, neighbourPort);
    await b.client.call('DELETE', `/v1/spaces/${neighbour.id}`);

    // And back to A: the same space arriving there again (B's engine store adopted anew).
    const back = await moveSpace(b.client, a.client, space.id);
    assert.equal(back.to!.url, a.daemon.url);
    await assert.rejects(b.client.spaces.get(space.id), refusedWith('space_moved'));
    assert.equal((await a.client.spaces.unlock(space.id, made.body.wrappedKey)).state, 'active');
    await waitFor('the third run, on A again', async () => {
      const r = await a.client.call<{ text: string }>('GET', `${base}/containers/web/logs?tail=30`);
      return (r.body.text.match(/again: OCS-MV-ROOTFS/g) ?? []).length >= 2 ? true : undefined;
    });
    assert.equal((await a.client.call<Container>('GET', `${base}/containers/web`)).body.state, 'running');
    await a.client.call('DELETE', `/v1/spaces/${space.id}`);
  } finally {
    await nodes.close();
    if (imagePath) rmSync(dirname(imagePath), { recursive: true, force: true });
  }
});

test('a move that cannot happen leaves the space on its node, locked, as it was', async () => {
  const owner = generatePrivateKey();
  const nodes = await twoNodes(['mvx', 'mvy'], owner, 'org-mvx', ['spaces', 'storage']);
  const { a, b } = nodes;
  try {
    const made = await a.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 64 * MiB },
      leaseSeconds: 3600,
    });
    const space = made.body.space;
    nodes.spaces.add(space.id);
    const infoB = await b.client.node.info();
    const to = { url: b.daemon.url, fingerprint: infoB.tlsFingerprint };

    // No import was opened on B: B refuses the archive, A aborts.
    await assert.rejects(a.client.spaces.move(space.id, to), refusedWith('move_aborted'));
    const back = await a.client.spaces.get(space.id);
    assert.equal(back.state, 'locked');
    assert.equal(back.move, undefined);
    await assert.rejects(b.client.spaces.get(space.id), refusedWith('not_found'));

    // An import opened for another node's key: B refuses A's archive the same way.
    await b.client.spaces.openImport({
      spaceId: space.id,
      resources: space.resources,
      leaseSeconds: 600,
      source: { identityKey: generatePrivateKey().publicKey.toBase64url() },
    });
    await assert.rejects(a.client.spaces.move(space.id, to), refusedWith('move_aborted'));
    assert.equal((await a.client.spaces.get(space.id)).state, 'locked');
    assert.equal((await b.client.spaces.get(space.id)).state, 'importing', 'the import still waits for its own source');
    await b.client.spaces.destroy(space.id);

    // A target that is not there at all.
    await assert.rejects(
      a.client.spaces.move(space.id, { url: 'https://127.0.0.1:1', fingerprint: infoB.tlsFingerprint }),
      refusedWith('move_aborted'),
    );
    // Another key cannot order its move.
    const stranger = daemonClient(a.config.stateDir, a.daemon, {
      roles: ['spaces'],
      org: 'org-mvx',
      owner: generatePrivateKey(),
    });
    await assert.rejects(stranger.spaces.move(space.id, to), refusedWith('not_owner'));
    stranger.close();

    // It opens on A as it was.
    const unlocked = await a.client.spaces.unlock(space.id, made.body.wrappedKey);
    assert.equal(unlocked.state, 'active');
    await a.client.call('DELETE', `/v1/spaces/${space.id}`);
  } finally {
    await nodes.close();
  }
});
