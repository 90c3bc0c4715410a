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
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { DEFAULT_DENIED, nodeNetworks, spaceSubnet } from '@ocs/host';
import { NetnsLab, buildTestGuest, requireHost, testGuestUnavailable } from '@ocs/host/testing';
import type { Container, PublishedPort, Space, SpaceNetworkView, Vm } from '@ocs/protocol';
import { busyboxTar, reserveOwned, startTestNode, waitFor, MiB, type Owned, type TestNode } from './harness.js';
import { spaceTables } from './space-rules.js';

const lab = new NetnsLab();
// The farmer's network (the client), and the internet behind a router, as seen from the node
// (198.18.0.0/15 is for benchmarks, 203.0.113.0/24 for documentation: neither is this host's).
const NODE_FARM = '198.18.0.1';
const CLIENT = '198.18.0.2';
const NODE_WAN = '198.19.0.1';
const ROUTER = '198.19.0.2';
const INET = '203.0.113.10';
const RESOLVER = '203.0.113.53';
let t: TestNode;
let imageTar: Buffer;
let imageDir: string;

// The node's own networks (the farmer's, the router's) are denied without being listed.
const network = { egress: 'all', dns: [RESOLVER], denied: [...DEFAULT_DENIED] };

before(async () => {
  const mine = nodeNetworks().filter((n) => /^(198\.1[89]\.|203\.0\.113\.)/.test(n));
  assert.deepEqual(mine, [], 'this host is on a network the test would build');
  await lab.host('client');
  await lab.host('inet');
  await lab.linkToRoot({ host: 'client', dev: 'eth0', addr: `${CLIENT}/24` }, { suffix: 'c', addr: `${NODE_FARM}/24` });
  const wan = await lab.linkToRoot(
    { host: 'inet', dev: 'eth0', addr: `${ROUTER}/24` },
    { suffix: 'w', addr: `${NODE_WAN}/24` },
  );
  // The internet's hosts are beyond the router; the route goes with the lab's link.
  for (const a of [INET, RESOLVER]) await lab.ip('inet', ['addr', 'add', `${a}/32`, 'dev', 'lo']);
  execFileSync('ip', ['route', 'add', '203.0.113.0/24', 'via', ROUTER, 'dev', wan]);
  await lab.serve('client', 'client', { tcp: [7000] });
  await lab.serve('inet', 'router', { tcp: [7000], bind: ROUTER });
  await lab.serve('inet', 'inet', { tcp: [80], bind: INET });
  await lab.serve('inet', 'dns', { tcp: [53], bind: RESOLVER });
  t = await startTestNode({
    workloads: true,
    listenHost: '0.0.0.0',
    network,
    total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
  });
  ({ tar: imageTar, dir: imageDir } = await busyboxTar());
});

after(async () => {
  await t?.stop();
  await lab.cleanup();
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
});

async function reserve(ports: number, cpuMillicores = 1000): Promise<Owned> {
  const o = await reserveOwned(
    t,
    { cpuMillicores, memoryBytes: 512 * MiB, storageBytes: 256 * MiB, pids: 256, ports },
    ['containers', 'monitor'],
  );
  const { api, base } = o;
  const img = await api.call('POST', `${base}/images/busybox`, undefined, { raw: imageTar });
  assert.equal(img.status, 201, JSON.stringify(img.body));
  return o;
}

async function run(o: Owned, name: string, script: string): Promise<Container> {
  const r = await o.api.call<Container>('POST', `${o.base}/containers`, {
    name,
    image: 'busybox',
    command: ['sh', '-c', script],
    cpuMillicores: 100,
    memoryBytes: 32 * MiB,
    pids: 16,
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
  const none = await b.api.send('POST', `${b.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8080,
  });
  assert.equal(none.status, 409);
  assert.equal(code(none), 'budget_exceeded');
  const again = await a.api.send('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8080,
  });
  assert.equal(code(again), 'conflict', 'the same port twice');
  const taken = await a.api.send('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'web' },
    port: 8081,
    hostPort: published.hostPort,
  });
  assert.equal(code(taken), 'conflict');
  // A port of the range that a host process holds (as the daemon's own would be) is never
  // published: the DNAT would hand its clients to the tenant.
  const range = t.config.workloads.network.ports;
  const hostService = createServer((c) => c.end('the node itself'));
  await new Promise<void>((resolve) => hostService.listen(range.last, '0.0.0.0', resolve));
  try {
    const held = await a.api.send('POST', `${a.base}/network/ports`, {
      target: { kind: 'container', name: 'web' },
      port: 8081,
      hostPort: range.last,
    });
    assert.equal(held.status, 409);
    assert.equal(code(held), 'conflict');
    assert.match(JSON.stringify(held.body), /in use by a service of the node/);
  } finally {
    await new Promise<void>((resolve) => hostService.close(() => resolve()));
  }
  const nobody = await a.api.send('POST', `${a.base}/network/ports`, {
    target: { kind: 'container', name: 'ghost' },
    port: 1,
  });
  assert.equal(code(nobody), 'not_found');
  // Another space cannot take A's port away.
  assert.equal(code(await b.api.send('DELETE', `${b.base}/network/ports/${published.hostPort}`)), 'not_found');
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
  const before = await output(a, 'out-0', `nc -w 3 ${INET} 80 </dev/null; echo done`);
  assert.doesNotMatch(before, /inet@/, before);
  const all = await a.api.call<SpaceNetworkView>('POST', `${a.base}/network/egress`, { mode: 'all' });
  assert.equal(all.status, 200, JSON.stringify(all.body));
  assert.deepEqual(all.body.egress, { mode: 'all' });
  const after = await output(
    a,
    'out-1',
    `nc -w 3 ${INET} 80 </dev/null; nc -w 3 ${RESOLVER} 53 </dev/null; cat /etc/resolv.conf`,
  );
  // Masqueraded: the internet sees the node's address.
  assert.match(after, new RegExp(`inet@${INET} from ${NODE_WAN}`), after);
  assert.match(after, new RegExp(`dns@${RESOLVER} from ${NODE_WAN}`), after);
  assert.match(after, new RegExp(`nameserver ${RESOLVER.replaceAll('.', '\\.')}`), after);
  // Never the node's own networks (the farmer's, the router's), whatever egress the space has.
  const farm = await output(
    a,
    'out-2',
    tries([
      [CLIENT, 7000],
      [ROUTER, 7000],
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
  const bad = await a.api.send('POST', `${a.base}/network/egress`, { mode: 'list', allow: ['999.0.0.1'] });
  assert.equal(bad.status, 400);
  const back = await a.api.call<SpaceNetworkView>('POST', `${a.base}/network/egress`, { mode: 'none' });
  assert.deepEqual(back.body.egress, { mode: 'none' });
});

test('a VM on the space network: its published port answers, and it reaches nothing by default', async (tc) => {
  const why = requireHost('a test guest (kernel + busybox)', (await testGuestUnavailable()) ?? false);
  if (why) return tc.skip(why);
  const c = await reserve(1, 1500);
  const dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-netvm-'));
  try {
    const guest = await buildTestGuest(dir, 'serve');
    for (const [name, path] of [
      ['vmlinuz', guest.kernel],
      ['initrd', guest.initrd],
    ] as const)
      assert.equal(
        (await c.api.call('POST', `${c.base}/files/${name}`, undefined, { raw: readFileSync(path) })).status,
        201,
      );
    const vmApi = t.client({ roles: ['vms', 'containers', 'monitor'], owner: c.owner });
    const vm = await vmApi.call<Vm>('POST', `${c.base}/vms`, {
      name: 'vmweb',
      vcpus: 1,
      memoryBytes: 128 * MiB,
      boot: { kind: 'kernel', kernel: 'vmlinuz', initrd: 'initrd', cmdline: `${guest.cmdline} ocs.probe=${INET}:80` },
    });
    assert.equal(vm.status, 201, JSON.stringify(vm.body));
    const sub = spaceSubnet((await c.api.call<SpaceNetworkView>('GET', `${c.base}/network`)).body.subnet!);
    assert.equal(vm.body.network?.address, `${sub.vms.first}/${sub.prefix}`, 'the first VM gets the first VM address');
    assert.equal(vm.body.network?.gateway, sub.gateway);
    const consoleText = await waitFor(
      "the guest's egress probe on its console",
      async () => {
        const r = await vmApi.call<{ text: string }>('GET', `${c.base}/vms/vmweb/console`);
        return /OCS-VM-PROBE-(OPEN|SHUT)/.test(r.body.text) ? r.body.text : undefined;
      },
      180_000,
    );
    assert.match(consoleText, /OCS-VM-NET-UP/, `the guest set its address: ${consoleText}`);
    assert.match(consoleText, /OCS-VM-PROBE-SHUT/, 'a VM has no egress until the owner asks');
    // The control: a container of its own space reaches it.
    const own = await output(c, 'probe-own-vm', tries([[sub.vms.first, 8080]]));
    assert.match(own, /answer-of-vm/, `${own}\n${consoleText}`);
    const p = await vmApi.call<PublishedPort>('POST', `${c.base}/network/ports`, {
      target: { kind: 'vm', name: 'vmweb' },
      port: 8080,
    });
    assert.equal(p.status, 201, JSON.stringify(p.body));
    await waitFor(
      "the VM's published port to answer",
      async () =>
        (await lab.probe('client', [tcp(NODE_FARM, p.body.hostPort)]))[0] === 'answer-of-vm' ? true : undefined,
      30_000,
    );
    // Another space reaches it on no address.
    const cross = await output(b, 'probe-vm', tries([[sub.vms.first, 8080]]));
    assert.deepEqual(opened(cross), [], cross);
    assert.doesNotMatch(cross, /answer-of-vm/, cross);
  } finally {
    const farmer = t.client({ roles: ['farmer'] });
    assert.equal((await farmer.call('DELETE', `/v1/spaces/${c.space.id}`, undefined, { sign: false })).status, 204);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!(await spaceTables()).has(c.space.id));
});

test('published ports follow the records across a restart, also after the rules were lost', async () => {
  const reuse = t.reuse;
  const port = daemonPort();
  await t.stop({ keepHost: true });
  try {
    // While the daemon is down its rules stay: the container keeps answering.
    assert.equal((await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0], 'answer-of-A');
    execFileSync('nft', ['delete', 'table', 'inet', `ocs_${a.space.id}`]);
    assert.deepEqual(await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]), [null], 'no rules, no answer');
  } finally {
    // Always again: a stopped node's host objects are removed only by a node on its state.
    t = await startTestNode({ workloads: true, listenHost: '0.0.0.0', network, reuse, port });
  }
  assert.ok((await spaceTables()).has(a.space.id));
  await waitFor(
    'the published port to answer again',
    async () =>
      (await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0] === 'answer-of-A' ? true : undefined,
    15_000,
  );
});

test('rules removed behind the running daemon (as a flush of the ruleset does) are back within seconds, and counted', async () => {
  const restored = async () => {
    const r = await t.client({ roles: ['monitor'] }).send('GET', '/metrics');
    return Number(/^ocs_firewall_restored_total (\S+)$/m.exec(r.body as string)?.[1] ?? NaN);
  };
  const before = await restored();
  assert.equal((await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0], 'answer-of-A');
  // What `nft -f /etc/nftables.conf` (Debian's, `flush ruleset` first) does to this node's rules,
  // without flushing what other programs on this host keep in the ruleset.
  execFileSync('nft', ['delete', 'table', 'inet', `ocs_${a.space.id}`]);
  execFileSync('nft', ['delete', 'table', 'inet', 'ocs']);
  await waitFor(
    'the space table back',
    async () => ((await spaceTables()).has(a.space.id) ? true : undefined),
    3 * t.config.workloads.network.watchSeconds * 1000,
  );
  await waitFor(
    'the published port to answer again',
    async () =>
      (await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0] === 'answer-of-A' ? true : undefined,
    15_000,
  );
  // Counted when the whole reconcile is done, which may be a moment after this space's rules answer.
  await waitFor('the restore to be counted', async () => ((await restored()) >= before + 1 ? true : undefined), 10_000);
});

test('a chain flushed inside a table of the running daemon (the table still there) is made again within seconds, and counted', async () => {
  const restored = async () => {
    const r = await t.client({ roles: ['monitor'] }).send('GET', '/metrics');
    return Number(/^ocs_firewall_restored_total (\S+)$/m.exec(r.body as string)?.[1] ?? NaN);
  };
  const before = await restored();
  assert.equal((await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0], 'answer-of-A');
  execFileSync('nft', ['flush', 'chain', 'inet', `ocs_${a.space.id}`, 'prerouting']);
  assert.ok((await spaceTables()).has(a.space.id), 'the table is still there');
  assert.deepEqual(await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]), [null], 'the flush took');
  await waitFor(
    'the published port to answer again',
    async () =>
      (await lab.probe('client', [tcp(NODE_FARM, published.hostPort)]))[0] === 'answer-of-A' ? true : undefined,
    3 * t.config.workloads.network.watchSeconds * 1000,
  );
  // Counted when the whole reconcile is done, which may be a moment after this space's rules answer.
  await waitFor('the restore to be counted', async () => ((await restored()) >= before + 1 ? true : undefined), 10_000);
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
