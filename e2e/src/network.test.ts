/**
 * The spaces' networks end to end, on the real kernel with the daemon's own rules: the outside
 * world is made of network namespaces linked to this host (a client on the farmer's network, an
 * "internet" host with a resolver), the node is this host. An owner publishes a container's port
 * and a client reaches it; another space's container reaches neither it nor the node; egress is
 * refused until the owner asks for it within the node's policy; what is published follows the
 * records across a restart and goes with the space.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULT_DENIED, spaceSubnet } from '@ocs/host';
import { NetnsLab, buildBusyboxImage } from '@ocs/host/testing';
import {
  generatePrivateKey,
  type Container,
  type CreateSpaceResponse,
  type PublishedPort,
  type Space,
  type SpaceNetworkView,
} from '@ocs/protocol';
import type { OcsClient } from '@ocs/client';
import { startTestNode, waitFor, MiB, type TestNode } from './harness.js';
import { spaceTables } from './space-rules.js';

const lab = new NetnsLab();
// The farmer's network (the client) and the internet, as seen from the node.
const NODE_FARM = '192.0.2.1';
const CLIENT = '192.0.2.2';
const NODE_WAN = '198.51.100.1';
const INET = '198.51.100.2';
const RESOLVER = '198.51.100.53';
let t: TestNode;
let imageTar: Buffer;
let imageDir: string;

const network = {
  egress: 'all',
  dns: [RESOLVER],
  // The farmer's own network is one of the node's other networks: no space reaches it.
  denied: [...DEFAULT_DENIED, '192.0.2.0/24'],
};

before(async () => {
  await lab.host('client');
  await lab.host('inet');
  await lab.linkToRoot({ host: 'client', dev: 'eth0', addr: `${CLIENT}/24` }, { suffix: 'c', addr: `${NODE_FARM}/24` });
  await lab.linkToRoot({ host: 'inet', dev: 'eth0', addr: `${INET}/24` }, { suffix: 'w', addr: `${NODE_WAN}/24` });
  await lab.ip('inet', ['addr', 'add', `${RESOLVER}/24`, 'dev', 'eth0']);
  await lab.serve('client', 'client', { tcp: [7000] });
  await lab.serve('inet', 'inet', { tcp: [80] });
  await lab.serve('inet', 'dns', { udp: [53], bind: RESOLVER });
  t = await startTestNode({
    workloads: true,
    listenHost: '0.0.0.0',
    network,
    total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
  });
  const path = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
  imageDir = dirname(path);
  imageTar = readFileSync(path);
});

after(async () => {
  await t?.stop();
  await lab.cleanup();
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
});

interface Owned {
  space: Space;
  api: OcsClient;
  base: string;
}

async function reserve(ports: number): Promise<Owned> {
  const owner = generatePrivateKey();
  const r = await t.client({ roles: ['spaces'], owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources: { cpuMillicores: 1000, memoryBytes: 512 * MiB, storageBytes: 256 * MiB, pids: 256, ports },
    leaseSeconds: 3600,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const api = t.client({ roles: ['containers', 'monitor'], owner });
  const base = r.body.space.apiBase;
  const img = await api.call('POST', `${base}/images/busybox`, undefined, { raw: imageTar });
  assert.equal(img.status, 201, JSON.stringify(img.body));
  return { space: r.body.space, api, base };
}

async function run(o: Owned, name: string, script: string): Promise<Container> {
  const r = await o.api.call<Container>('POST', `${o.base}/containers`, {
    name,
    image: 'busybox',
    command: ['sh', '-c', script],
    cpuMillicores: 100,
    memoryBytes: 32 * MiB,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

/** Runs a one-shot container of `o` and returns its output once it has exited. */
async function output(o: Owned, name: string, script: string): Promise<string> {
  await run(o, name, script);
  await waitFor(
    `${name} to exit`,
    async () =>
      (await o.api.call<Container>('GET', `${o.base}/containers/${name}`)).body.state === 'exited' ? true : undefined,
    30_000,
  );
  const logs = await o.api.call<{ text: string }>('GET', `${o.base}/containers/${name}/logs`);
  assert.equal((await o.api.call('DELETE', `${o.base}/containers/${name}`)).status, 204);
  return logs.body.text;
}

const code = (r: { body: unknown }) => (r.body as { error?: { code: string } }).error?.code;
const tcp = (host: string, port: number) => ({ proto: 'tcp' as const, host, port });
/** `nc` to each target in turn: what answers is printed, and `OPEN <target>` for each connection made. */
const tries = (targets: [string, number][]) =>
  targets.map(([h, p]) => `nc -w 2 ${h} ${p} </dev/null && echo "OPEN ${h}:${p}"; echo "tried ${h}:${p}"`).join('; ');
const opened = (text: string) => text.split('\n').filter((l) => l.startsWith('OPEN'));

let a: Owned;
let b: Owned;
let published: PublishedPort;
const daemonPort = () => Number(new URL(t.node.url).port);

test('a published port answers clients with the container, and GET of the space shows it', async () => {
  a = await reserve(2);
  b = await reserve(0);
  await run(a, 'web', 'while true; do echo "answer-of-A" | nc -l -p 8080; done');
  const r = await a.api.call<PublishedPort>('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8080,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  published = r.body;
  const range = t.config.workloads.network.ports;
  assert.ok(published.hostPort >= range.first && published.hostPort <= range.last, String(published.hostPort));
  assert.equal(published.protocol, 'tcp');
  const sub = spaceSubnet((await a.api.call<SpaceNetworkView>('GET', `${a.base}/network`)).body.subnet!);
  assert.equal(published.address, sub.containers.first, 'the first container gets the first address');
  await waitFor(
    'the published port to answer',
    async () =>
      (await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0] === 'answer-of-A' ? true : undefined,
    15_000,
  );
  const space = await t.client({ roles: ['farmer'] }).call<Space>('GET', `/v1/spaces/${a.space.id}`, undefined, {
    sign: false,
  });
  assert.deepEqual(
    space.body.network.published.map((p) => [p.hostPort, p.protocol, p.target.name, p.port]),
    [[published.hostPort, 'tcp', 'web', 8080]],
  );
  assert.deepEqual(space.body.network.egress, { mode: 'none' });
});

test("ports are the space's reservation: no more than reserved, none for a space that reserved none", async () => {
  await run(b, 'web', 'while true; do echo "answer-of-B" | nc -l -p 8080; done');
  const none = await b.api.call('POST', `${b.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8080,
  });
  assert.equal(none.status, 409);
  assert.equal(code(none), 'budget_exceeded');
  const again = await a.api.call('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8080,
  });
  assert.equal(code(again), 'conflict', 'the same port twice');
  const taken = await a.api.call('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8081,
    hostPort: published.hostPort,
  });
  assert.equal(code(taken), 'conflict');
  const nobody = await a.api.call('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'ghost' },
    port: 1,
  });
  assert.equal(code(nobody), 'not_found');
  // Another space cannot take A's port away.
  assert.equal(code(await b.api.call('DELETE', `${b.base}/network/ports/${published.hostPort}`)), 'not_found');
});

test("another space reaches neither A's container nor the node, on any address", async () => {
  const subA = spaceSubnet((await a.api.call<SpaceNetworkView>('GET', `${a.base}/network`)).body.subnet!);
  const subB = spaceSubnet((await b.api.call<SpaceNetworkView>('GET', `${b.base}/network`)).body.subnet!);
  // The control: B's own container answers the same probe.
  const own = await output(b, 'probe-own', tries([[subB.containers.first, 8080]]));
  assert.match(own, /answer-of-B/, own);
  assert.equal(opened(own).length, 1, own);
  const text = await output(
    b,
    'probe-cross',
    tries([
      [published.address, 8080], // A's container
      [subA.gateway, published.hostPort], // the node on A's gateway
      [NODE_FARM, published.hostPort], // the published port, from inside
      [subB.gateway, daemonPort()], // the daemon's port, on B's own gateway
      [NODE_FARM, daemonPort()],
      [NODE_WAN, daemonPort()],
      ['127.0.0.1', daemonPort()],
      [CLIENT, 7000], // the farmer's network
    ]),
  );
  assert.doesNotMatch(text, /answer-of-A/, text);
  assert.equal((text.match(/tried/g) ?? []).length, 8, text);
  assert.deepEqual(opened(text), [], text);
  // The control for the daemon's port: a client on the farmer's network connects to it.
  const { stdout } = await lab.exec('client', process.execPath, [
    '-e',
    `require('node:net').connect(${daemonPort()}, '${NODE_FARM}').on('connect', () => { console.log('OPEN'); process.exit(0); }).on('error', () => process.exit(0))`,
  ]);
  assert.equal(stdout.trim(), 'OPEN');
});

test("egress: none by default, then as the owner asks within the node's policy; DNS with it", async () => {
  const before = await output(a, 'out-0', `wget -q -T 3 -O - http://${INET}/ ; echo done`);
  assert.doesNotMatch(before, /inet@/, before);
  const all = await a.api.call<SpaceNetworkView>('POST', `${a.base}/network/egress`, { mode: 'all' });
  assert.equal(all.status, 200, JSON.stringify(all.body));
  assert.deepEqual(all.body.egress, { mode: 'all' });
  const after = await output(
    a,
    'out-1',
    `nc -w 3 ${INET} 80 </dev/null; echo hi | nc -u -w 2 ${RESOLVER} 53; echo; cat /etc/resolv.conf`,
  );
  // Masqueraded: the internet sees the node's address.
  assert.match(after, new RegExp(`inet@${INET} from ${NODE_WAN}`), after);
  assert.match(after, new RegExp(`dns from ${NODE_WAN}`), after);
  assert.match(after, new RegExp(`nameserver ${RESOLVER.replaceAll('.', '\\.')}`), after);
  // Never the farmer's network, whatever egress the space has.
  const farm = await output(
    a,
    'out-2',
    tries([
      [CLIENT, 7000],
      [NODE_FARM, daemonPort()],
    ]),
  );
  assert.equal(
    farm.split('\n').filter((l) => l.trim() && !l.startsWith('tried') && !/timed out/.test(l)).length,
    0,
    farm,
  );
  // B asked for nothing.
  const bOut = await output(b, 'out-b', `nc -w 3 ${INET} 80 </dev/null; echo done`);
  assert.doesNotMatch(bOut, /inet@/, bOut);
  const bad = await a.api.call('POST', `${a.base}/network/egress`, { mode: 'list', allow: ['999.0.0.1'] });
  assert.equal(bad.status, 400);
  const back = await a.api.call<SpaceNetworkView>('POST', `${a.base}/network/egress`, { mode: 'none' });
  assert.deepEqual(back.body.egress, { mode: 'none' });
});

test('published ports follow the records across a restart, also after the rules were lost', async () => {
  const reuse = t.reuse;
  const port = daemonPort();
  await t.stop({ keepHost: true });
  // While the daemon is down its rules stay: the container keeps answering.
  assert.equal((await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0], 'answer-of-A');
  const { execFileSync } = await import('node:child_process');
  execFileSync('nft', ['delete', 'table', 'inet', `ocs_${a.space.id}`]);
  t = await startTestNode({ workloads: true, listenHost: '0.0.0.0', network, reuse, port });
  assert.ok((await spaceTables()).has(a.space.id));
  await waitFor(
    'the published port to answer',
    async () =>
      (await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0] === 'answer-of-A' ? true : undefined,
    15_000,
  );
});

test('unpublish cuts the port; destroy takes the rules with the space', async () => {
  assert.equal((await a.api.call('DELETE', `${a.base}/network/ports/${published.hostPort}`)).status, 204);
  assert.deepEqual(await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]), [null]);
  const view = await a.api.call<SpaceNetworkView>('GET', `${a.base}/network`);
  assert.deepEqual(view.body.published, []);
  const farmer = t.client({ roles: ['farmer'] });
  for (const s of [a, b])
    assert.equal((await farmer.call('DELETE', `/v1/spaces/${s.space.id}`, undefined, { sign: false })).status, 204);
  const tables = await spaceTables();
  assert.ok(!tables.has(a.space.id) && !tables.has(b.space.id));
});
