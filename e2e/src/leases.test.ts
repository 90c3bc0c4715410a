/**
 * Orchestrators with `ocs lease`, against three real node daemons on this machine (their own
 * state directories, ports and cgroup parents) that trust one organization's issuer: placement
 * goes where there is room, skips a node that is gone, and a reservation whose response is lost
 * on the way is retried into the same space; `keep` renews across an expiry boundary and ends
 * cleanly on SIGTERM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mintToken } from '@ocs/protocol';
import { OcsClient } from '@ocs/client';
import { startTestNode, GiB, type TestNode } from './harness.js';
import { ocsProcess as spawnOcs, ok, runOcs } from './ocs-process.js';

const ISSUER = 'https://org.example.test';
const issuerKey = generateKeyPairSync('ed25519');
const jwk = { ...issuerKey.publicKey.export({ format: 'jwk' }), kid: 'org-1', alg: 'EdDSA', use: 'sig' };

const nodes: TestNode[] = [];
let dir: string;
let token = '';

const ocsProcess = (args: string[]) => spawnOcs(dir, token, args);
const ocs = (args: string[]) => runOcs(dir, token, args);
/** `ocs [--json] lease place` on `names` (comma-separated), for these resources, with `more` options. */
const place = (
  names: string,
  r: { cpu: string; memory: string; storage: string },
  o: { json?: boolean; more?: string[] } = {},
) =>
  ocs([
    ...(o.json === false ? [] : ['--json']),
    'lease',
    'place',
    '--nodes',
    names,
    '--cpu',
    r.cpu,
    '--memory',
    r.memory,
    '--storage',
    r.storage,
    ...(o.more ?? []),
  ]);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ocs-leases-'));
  const auth = { issuers: [{ issuer: ISSUER, jwks: { keys: [jwk] } }] };
  // Room for 2 GiB on the third node only. The second listens on 127.0.0.2, so that a proxy
  // can stand in front of it at 127.0.0.1 on the same port (a name the node answers to).
  for (const [i, memory] of [1, 1, 8].entries())
    nodes.push(
      await startTestNode({
        auth,
        total: { cpuMillicores: 8000, memoryBytes: memory * GiB, storageBytes: 4 * GiB },
        ...(i === 1 ? { listenHost: '127.0.0.2' } : {}),
      }),
    );
  // One token of the organization for all three nodes (its audience names each).
  token = await mintToken({
    privateKey: issuerKey.privateKey,
    kid: 'org-1',
    alg: 'EdDSA',
    issuer: ISSUER,
    audience: nodes.map((n) => n.node.nodeId),
    subject: 'orchestrator',
    org: 'org-a',
    roles: ['spaces', 'monitor'],
    lifetimeSeconds: 900,
  });
  ok(await ocs(['key', 'new']));
  for (const [i, n] of nodes.entries())
    ok(await ocs(['node', 'add', `n${i + 1}`, n.node.url, '--fingerprint', n.node.tls.fingerprint]));
});

after(async () => {
  for (const n of nodes) await n.stop();
  rmSync(dir, { recursive: true, force: true });
});

const spacesOn = (n: TestNode) => n.node.repo.list({}).filter((r) => r.state !== 'destroyed');

test('a lease that fits only on the third node goes there', async () => {
  const r = await place('n1,n2,n3', { cpu: '1', memory: '2GiB', storage: '64MiB' });
  const lease = JSON.parse(ok(r)) as { node: string; spaceId: string };
  assert.equal(lease.node, 'n3');
  assert.deepEqual(
    spacesOn(nodes[2]!).map((s) => s.id),
    [lease.spaceId],
  );
  assert.equal(spacesOn(nodes[0]!).length + spacesOn(nodes[1]!).length, 0);
  // Recorded with its wrapped key, 0600; ls shows it without the key.
  const rec = JSON.parse(readFileSync(join(dir, 'config', 'leases.json'), 'utf8')) as {
    leases: { spaceId: string; wrappedKey: string }[];
  };
  assert.match(rec.leases.find((l) => l.spaceId === lease.spaceId)!.wrappedKey, /BEGIN AGE ENCRYPTED FILE/);
  assert.doesNotMatch(ok(await ocs(['--json', 'lease', 'ls'])), /AGE ENCRYPTED/);
  ok(await ocs(['lease', 'release', lease.spaceId]));
  assert.equal(spacesOn(nodes[2]!).length, 0);

  // Nowhere has room: capacity_exceeded, nothing reserved.
  const none = await place('n1,n2,n3', { cpu: '1', memory: '16GiB', storage: '64MiB' }, { json: false });
  assert.equal(none.code, 6);
  assert.match(none.stderr, /skipped n3: not enough free capacity/);
});

test('a reservation whose response is lost is retried into the same space', async () => {
  const target = nodes[1]!;
  const port = Number(new URL(target.node.url).port);
  const proxy = await lossyProxy('127.0.0.2', port, '127.0.0.1');
  try {
    ok(await ocs(['node', 'add', 'n2p', `https://127.0.0.1:${port}`, '--fingerprint', target.node.tls.fingerprint]));
    const before = spacesOn(target).length;
    proxy.arm();
    const r = await place('n2p', { cpu: '0.5', memory: '128MiB', storage: '16MiB' });
    const lease = JSON.parse(ok(r)) as { spaceId: string };
    assert.equal(proxy.cuts(), 1, 'the first response was cut');
    const now = spacesOn(target);
    assert.equal(now.length, before + 1, 'one space, not two');
    assert.ok(now.some((s) => s.id === lease.spaceId));
    ok(await ocs(['lease', 'release', lease.spaceId]));
  } finally {
    await proxy.close();
  }
});

test('a node being drained is skipped, and placement goes on to the next', async () => {
  const target = nodes[1]!;
  const farmer = new OcsClient({
    url: target.node.url,
    fingerprint: target.node.tls.fingerprint,
    token: () =>
      mintToken({
        privateKey: issuerKey.privateKey,
        kid: 'org-1',
        alg: 'EdDSA',
        issuer: ISSUER,
        audience: target.node.nodeId,
        subject: 'farmer',
        org: 'org-a',
        roles: ['farmer'],
        lifetimeSeconds: 300,
      }),
  });
  try {
    await farmer.node.drain({ graceSeconds: 0 });
    const before = spacesOn(target).length;
    const r = await place('n2,n3', { cpu: '0.5', memory: '128MiB', storage: '16MiB' }, { json: false });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipped n2: being drained/);
    assert.equal(spacesOn(target).length, before, 'nothing reserved on the draining node');
    const placed = spacesOn(nodes[2]!);
    assert.equal(placed.length, 1, 'placed on n3');
    ok(await ocs(['lease', 'release', placed[0]!.id]));
  } finally {
    // Reopened (the drain of an empty node is over at once: drained), for the tests after.
    const reopened = await farmer.node.cancelDrain();
    assert.equal(reopened.state, 'cancelled');
    assert.equal((await farmer.node.info()).draining, false);
    farmer.close();
  }
});

test('a node that is gone is skipped', async () => {
  await nodes[0]!.stop();
  const r = await place('n1,n2,n3', { cpu: '0.5', memory: '128MiB', storage: '16MiB' });
  const lease = JSON.parse(ok(r)) as { node: string; spaceId: string };
  assert.equal(lease.node, 'n2');
  assert.match(r.stderr, /^$|skipped n1/);
  ok(await ocs(['lease', 'release', lease.spaceId]));
});

test('keep renews across the expiry boundary; a lease not kept expires; SIGTERM ends keep cleanly', async () => {
  const kept = join(dir, 'kept.json');
  const other = join(dir, 'other.json');
  const placeOn3 = async (record: string) =>
    JSON.parse(
      ok(
        await place(
          'n3',
          { cpu: '0.5', memory: '128MiB', storage: '16MiB' },
          { more: ['--record', record, '--lease', '60s'] },
        ),
      ),
    ) as { spaceId: string; expiresAt: string };
  const a = await placeOn3(kept);
  const b = await placeOn3(other);
  const keeper = ocsProcess(['lease', 'keep', '--record', kept, '--interval', '1s']);
  let log = '';
  keeper.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((r) => keeper.on('close', r));
  try {
    // Past the first lease's end, with the node's lease sweep (1 s) behind it.
    await new Promise((r) => setTimeout(r, Date.parse(a.expiresAt) - Date.now() + 4000));
    const spaceA = nodes[2]!.node.repo.get(a.spaceId)!;
    const spaceB = nodes[2]!.node.repo.get(b.spaceId)!;
    assert.equal(spaceA.state, 'active', log);
    assert.ok(spaceA.leaseExpiresAt > Date.parse(a.expiresAt), 'renewed past its first expiry');
    assert.equal(spaceB.state, 'expired');
    assert.match(log, new RegExp(`renewed ${a.spaceId} on n3`));
  } finally {
    keeper.kill('SIGTERM');
  }
  assert.equal(await exited, 0);
  assert.match(log, /stopped/);
  ok(await ocs(['lease', 'release', '--all', '--record', kept]));
  ok(await ocs(['lease', 'release', '--all', '--record', other]));
});

/**
 * A TCP proxy that, once armed, cuts its next connection once the request has gone through, before the
 * client sees any answer: the node made the space, the client never heard. It reads TLS record
 * headers only (the records themselves stay encrypted end to end): in TLS 1.3 the client's
 * first application-data record is its Finished, then one per request.
 */
async function lossyProxy(
  host: string,
  port: number,
  listenOn: string,
): Promise<{ arm: () => void; cuts: () => number; close: () => Promise<void> }> {
  let cuts = 0;
  let armed = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const up = connect(port, host);
    sockets.add(client).add(up);
    const cut = armed;
    armed = false;
    let buf = Buffer.alloc(0);
    let appRecords = 0;
    // Finished, the GET of the node's capacity, then the reservation: cut on that one.
    const cutAt = 3;
    client.on('data', (d: Buffer) => {
      up.write(d);
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        if (buf[0] === 0x17) appRecords++;
        buf = buf.subarray(5 + buf.readUInt16BE(3));
      }
    });
    up.on('data', (d: Buffer) => {
      if (cut && appRecords >= cutAt) {
        if (!client.destroyed) cuts++;
        client.destroy();
        return;
      }
      if (!client.destroyed) client.write(d);
    });
    client.on('close', () => (cut ? setTimeout(() => up.destroy(), 5000).unref() : up.destroy()));
    up.on('close', () => client.destroy());
    client.on('error', () => undefined);
    up.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(port, listenOn, r));
  return {
    arm: () => void (armed = true),
    cuts: () => cuts,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
