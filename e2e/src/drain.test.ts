/**
 * A node retired while its owners are away: two real daemons on one machine, B taking A's
 * drains (its farmer lists A's identity key as a peer). Four spaces on A, each holding a file:
 * one whose owner delegated it to B, one delegated to an orchestrator's key, one with no
 * delegation, and one delegated to a node that is not there. The farmer drains A. The first
 * goes to B on the owner's delegation alone; the orchestrator moves the second with its own
 * key and token (never the owner's); the other two are exported into A's export directory as
 * archives signed by A, which their owner checks, signs and restores on B. Every space opens on
 * B with the owner's key and holds its file; A holds nothing of any but tombstones, refuses new
 * spaces while it drains, and its audit log has each step. And each way a delegation or a
 * peer's import can be wrong is refused with its code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  generatePrivateKey,
  isOcsError,
  signDelegation,
  type CreateSpaceResponse,
  type DelegationGrant,
  type Ed25519PrivateKey,
  type OcsError,
} from '@ocs/protocol';
import { OcsClient, adoptArchive, archiveSigners } from '@ocs/client';
import { daemonClient } from './daemon-process.js';
import { waitFor } from './harness.js';
import { twoNodes, type Node } from './two-nodes.js';

const MiB = 1024 ** 2;
const DAY = 86400_000;

const refusal = async (p: Promise<unknown>): Promise<OcsError> => {
  try {
    await p;
  } catch (err) {
    if (isOcsError(err)) return err;
    throw err;
  }
  assert.fail('expected a refusal');
};

function grant(spaceId: string, owner: Ed25519PrivateKey, over: Partial<DelegationGrant> = {}): DelegationGrant {
  const now = Date.now();
  return {
    v: 1,
    spaceId,
    org: 'org-dr',
    ownerKey: owner.publicKey.toBase64url(),
    nodes: [],
    orchestrators: [],
    issuedAt: new Date(now - 60_000).toISOString(),
    notAfter: new Date(now + DAY).toISOString(),
    ...over,
  };
}

/** The file the owner wrote, read back through the space's mount on `n` (the space unlocked there). */
function holds(n: Node, id: string, marker: string): boolean {
  const files = join(n.config.storage.root, 'mnt', id, 'data', 'space', 'files');
  return existsSync(files) && readdirSync(files).some((f) => readFileSync(join(files, f), 'utf8').includes(marker));
}

function assertNoTrace(n: Node, id: string, why: string): void {
  const root = n.config.storage.root;
  const images = existsSync(join(root, 'images')) ? readdirSync(join(root, 'images')) : [];
  assert.equal(
    images.some((f) => f.startsWith(id)),
    false,
    `${why}: an image`,
  );
  assert.equal(existsSync(join(root, 'mnt', id)), false, `${why}: a mount directory`);
  assert.equal(existsSync(`/sys/fs/cgroup/memory/${n.dir.parent}/${id}.space`), false, `${why}: a cgroup`);
}

test('a drained node: each space goes where its owner allowed, or is exported for its owner to restore; nothing stays', async () => {
  const owner = generatePrivateKey();
  const orchestrator = generatePrivateKey();
  // A key B also takes drains from: the test plays a peer node with it, to be refused.
  const peer = generatePrivateKey();
  const nodes = await twoNodes(['dra', 'drb'], owner, 'org-dr', ['spaces', 'storage'], {
    peersOfB: (a) => [a, peer.publicKey.toBase64url()],
  });
  const { a, b } = nodes;
  const farmerA = daemonClient(a.config.stateDir, a.daemon, { roles: ['farmer'], org: 'farm' });
  const orchestratorOn = (n: Node) =>
    daemonClient(n.config.stateDir, n.daemon, { roles: ['spaces'], org: 'org-dr', owner: orchestrator });
  const [orchA, orchB] = [orchestratorOn(a), orchestratorOn(b)];
  try {
    const infoB = await b.client.node.info();
    const toB = { url: b.daemon.url, fingerprint: infoB.tlsFingerprint };
    const reserve = async (name: string) => {
      const made = await a.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 64 * MiB },
        leaseSeconds: 3600,
        name,
      });
      nodes.spaces.add(made.body.space.id);
      const marker = `OCS-DR-${name}-${randomBytes(8).toString('hex')}`;
      await a.client.space(made.body.space.id).files.upload('marker', Buffer.from(marker));
      return { id: made.body.space.id, wrappedKey: made.body.wrappedKey, marker };
    };
    const toNode = await reserve('to-node');
    const byOrch = await reserve('by-orchestrator');
    const none = await reserve('no-delegation');
    const nowhere = await reserve('to-nowhere');

    // The owner's delegations, each checked as it is kept.
    const delegated = await a.client.spaces.delegate(
      toNode.id,
      signDelegation(owner, grant(toNode.id, owner, { nodes: [toB] })),
    );
    assert.deepEqual(delegated.delegation?.nodes, [toB]);
    // The owner hands this one to the orchestrator too: it shows it to the node it picks.
    const orchJws = signDelegation(
      owner,
      grant(byOrch.id, owner, { orchestrators: [orchestrator.publicKey.toBase64url()] }),
    );
    await a.client.spaces.delegate(byOrch.id, orchJws);
    // A node that is not there (a closed port): the drain tries it, then exports.
    await a.client.spaces.delegate(
      nowhere.id,
      signDelegation(
        owner,
        grant(nowhere.id, owner, { nodes: [{ url: 'https://127.0.0.1:9', fingerprint: toB.fingerprint }] }),
      ),
    );

    // Refused delegations: another key's, another space's, another org's, one already expired.
    const stranger = generatePrivateKey();
    const cases: [string, () => Promise<unknown>, string][] = [
      [
        "another key's",
        () => a.client.spaces.delegate(none.id, signDelegation(stranger, grant(none.id, stranger, { nodes: [toB] }))),
        'delegation_invalid',
      ],
      [
        "another space's",
        () => a.client.spaces.delegate(none.id, signDelegation(owner, grant(toNode.id, owner, { nodes: [toB] }))),
        'delegation_invalid',
      ],
      [
        "another org's",
        () =>
          a.client.spaces.delegate(
            none.id,
            signDelegation(owner, grant(none.id, owner, { nodes: [toB], org: 'org-x' })),
          ),
        'delegation_invalid',
      ],
      [
        'expired',
        () =>
          a.client.spaces.delegate(
            none.id,
            signDelegation(
              owner,
              grant(none.id, owner, {
                nodes: [toB],
                issuedAt: new Date(Date.now() - 2 * DAY).toISOString(),
                notAfter: new Date(Date.now() - DAY).toISOString(),
              }),
            ),
          ),
        'delegation_invalid',
      ],
      // An orchestrator no delegation names cannot move a space, nor keep a delegation.
      ["an orchestrator's move of a space not delegated to it", () => orchA.spaces.move(none.id, toB), 'not_owner'],
      [
        "an orchestrator's delegation",
        () => orchA.spaces.delegate(byOrch.id, signDelegation(owner, grant(byOrch.id, owner, { nodes: [toB] }))),
        'not_owner',
      ],
    ];
    for (const [what, p, code] of cases) {
      const err = await refusal(p());
      assert.equal(err.code, code, `${what}: ${err.code} ${err.message}`);
    }
    assert.equal((await a.client.spaces.get(none.id)).delegation, undefined, 'no refused delegation was kept');

    // Refused peer imports on B: a node B does not list, a delegation not naming B, a grant altered.
    const asPeer = (key: Ed25519PrivateKey) =>
      new OcsClient({ url: b.daemon.url, fingerprint: infoB.tlsFingerprint, ownerKey: key, retries: 0 });
    const body = (jws: string, spaceId: string) => ({
      spaceId,
      resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 64 * MiB },
      leaseSeconds: 3600,
      delegation: jws,
    });
    const toBJws = signDelegation(owner, grant(none.id, owner, { nodes: [toB] }));
    const notB = signDelegation(
      owner,
      grant(none.id, owner, { nodes: [{ ...toB, fingerprint: '00:'.repeat(31) + '00' }] }),
    );
    const [h, , s] = toBJws.split('.');
    const widened = Buffer.from(JSON.stringify(grant(toNode.id, owner, { nodes: [toB] }))).toString('base64url');
    const unknownPeer = asPeer(generatePrivateKey());
    const knownPeer = asPeer(peer);
    try {
      const peerCases: [string, () => Promise<unknown>, string][] = [
        ['a node B does not list', () => unknownPeer.imports.openPeer(body(toBJws, none.id)), 'not_owner'],
        ['a delegation not naming B', () => knownPeer.imports.openPeer(body(notB, none.id)), 'not_delegated'],
        [
          'a grant altered after signing',
          () => knownPeer.imports.openPeer(body(`${h}.${widened}.${s}`, toNode.id)),
          'delegation_invalid',
        ],
        [
          'a delegation for another space',
          () => knownPeer.imports.openPeer(body(toBJws, toNode.id)),
          'delegation_invalid',
        ],
      ];
      for (const [what, p, code] of peerCases) {
        const err = await refusal(p());
        assert.equal(err.code, code, `${what}: ${err.code} ${err.message}`);
      }
    } finally {
      unknownPeer.close();
      knownPeer.close();
    }
    assert.deepEqual(
      (await b.client.spaces.list()).spaces.map((x) => x.id),
      [],
      'no refused import left a space on B',
    );

    // The drain: the orchestrator gets two minutes.
    const started = await farmerA.node.drain({ graceSeconds: 120 });
    assert.equal(started.state, 'draining');
    assert.equal((await a.client.node.info()).draining, true);
    /** A reservation on A, which a draining or drained node refuses. */
    const reserveOnA = () =>
      refusal(
        a.client.call('POST', '/v1/spaces', {
          ownerKey: owner.publicKey.toBase64url(),
          resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 64 * MiB },
          leaseSeconds: 3600,
        }),
      );
    const refusedReserve = await reserveOnA();
    assert.equal(refusedReserve.code, 'node_draining');
    assert.equal(refusedReserve.status, 409);

    // The orchestrator's move, with its own key and the org's token: it opens the import on B
    // with the owner's delegation, then orders the move on A.
    await waitFor('the orchestrator’s space waits for it', async () => {
      const s = (await farmerA.node.drainStatus()).spaces.find((x) => x.spaceId === byOrch.id);
      return s?.outcome === 'waiting' ? true : undefined;
    });
    await orchB.spaces.openImport({
      spaceId: byOrch.id,
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 64 * MiB },
      leaseSeconds: 3600,
      source: { identityKey: (await a.client.node.info()).identityKey },
      delegation: orchJws,
    });
    const moved = await orchA.spaces.move(byOrch.id, toB);
    assert.equal(moved.to?.url, toB.url);

    const drained = await waitFor(
      'A is drained',
      async () => {
        const s = await farmerA.node.drainStatus();
        return s.state === 'drained' ? s : undefined;
      },
      120_000,
    ).catch(async (err: unknown) => {
      // What the drain was left at says why.
      throw new Error(`${(err as Error).message}: ${JSON.stringify(await farmerA.node.drainStatus())}`);
    });
    const outcome = (id: string) => drained.spaces.find((x) => x.spaceId === id);
    assert.equal(outcome(toNode.id)?.outcome, 'moved');
    assert.equal(outcome(toNode.id)?.to?.url, toB.url);
    assert.equal(outcome(byOrch.id)?.outcome, 'moved');
    assert.equal(outcome(none.id)?.outcome, 'exported');
    assert.equal(outcome(nowhere.id)?.outcome, 'exported');

    // A: tombstones only, each naming where the space went; nothing on its host.
    for (const sp of [toNode, byOrch, none, nowhere]) {
      const err = await refusal(a.client.spaces.get(sp.id));
      assert.equal(err.code, 'space_moved');
      assertNoTrace(a, sp.id, `A keeps ${sp.id}`);
    }
    const exported = (await refusal(a.client.spaces.get(none.id))).details as { archive?: { name: string } };
    assert.equal(exported.archive?.name, `${none.id}.ocsa`);
    assert.equal((await a.client.node.info()).capacity.used.storageBytes, 0);

    // On B, moved spaces open with the owner's key and hold their files, and keep the owner's
    // delegation: B's own drain may move them on as the owner allowed.
    assert.deepEqual((await b.client.spaces.get(toNode.id)).delegation, delegated.delegation);
    assert.deepEqual((await b.client.spaces.get(byOrch.id)).delegation?.orchestrators, [
      orchestrator.publicKey.toBase64url(),
    ]);
    for (const sp of [toNode, byOrch]) {
      assert.equal((await b.client.spaces.get(sp.id)).state, 'locked');
      await b.client.spaces.unlock(sp.id, sp.wrappedKey);
      assert.ok(holds(b, sp.id, sp.marker), `${sp.id}: its file on B`);
    }

    // The exported ones: ciphertext signed by A; the owner checks and signs, and restores on B.
    const exportDir = join(a.config.stateDir, 'exports');
    for (const sp of [none, nowhere]) {
      const file = join(exportDir, `${sp.id}.ocsa`);
      assert.equal(readFileSync(file).includes(Buffer.from(sp.marker)), false, 'the archive holds no marker');
      const signers = await archiveSigners(file);
      assert.deepEqual(
        signers.map((x) => x.by),
        ['node'],
      );
      const refusedUnsigned = await refusal(b.client.spaces.restore(file, { leaseSeconds: 3600 }));
      assert.equal(refusedUnsigned.code, 'archive_signature_invalid');
      const adopted = await adoptArchive(file, owner);
      assert.equal(adopted.signed, true);
      assert.deepEqual(adopted.nodes, [(await a.client.node.info()).identityKey]);
      const restored = await b.client.spaces.restore(file, { leaseSeconds: 3600 });
      nodes.spaces.add(restored.id);
      // A fork is another space: the delegation of the one archived (to-nowhere's) is not its.
      assert.equal(restored.delegation, undefined, 'a fork has no delegation');
      await b.client.spaces.unlock(restored.id, sp.wrappedKey);
      assert.ok(holds(b, restored.id, sp.marker), `${sp.id}: its file, restored on B`);
    }

    // Every step in A's audit log.
    const entries = (await farmerA.audit.list({ limit: 1000 })).entries;
    const did = (action: string, target?: string) =>
      entries.some((e) => e.action === action && e.outcome === 'ok' && (target === undefined || e.target === target));
    assert.ok(did('node.drain'), 'the drain');
    for (const sp of [toNode, byOrch]) assert.ok(did('space.move', sp.id), `the move of ${sp.id}`);
    for (const sp of [none, nowhere]) assert.ok(did('space.export', sp.id), `the export of ${sp.id}`);
    assert.ok(did('space.delegate', toNode.id), 'the delegation');

    // Drained, A stays closed across a restart, until its farmer reopens it.
    await nodes.restart(a);
    const farmerAgain = daemonClient(a.config.stateDir, a.daemon, { roles: ['farmer'], org: 'farm' });
    try {
      assert.equal((await a.client.node.info()).draining, true);
      assert.equal((await farmerAgain.node.drainStatus()).state, 'drained');
      assert.equal((await reserveOnA()).code, 'node_draining', 'still closed after the restart');
      assert.equal((await farmerAgain.node.cancelDrain()).state, 'cancelled');
      assert.equal((await a.client.node.info()).draining, false);
    } finally {
      farmerAgain.close();
    }
  } finally {
    farmerA.close();
    orchA.close();
    orchB.close();
    await nodes.close();
  }
});
