/**
 * Per-space networks, each in its space's own podman engine and under the node's rules for the
 * space (as the daemon runs them): containers of one space reach each other; a container of
 * another space cannot.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { LABEL_SPACE, bridgeName, networkName } from '#src/podman/names.js';
import { spaceSubnet } from '#src/podman/network-conflist.js';
import {
  busyboxTarball,
  engineSkip,
  newSpaceId,
  rejectsWith,
  specFor,
  testEngines,
  waitForState,
  type TestEngines,
} from '@ocs/host/testing/podman';
import type { ContainerSpec, ContainerDriver } from '#src/podman/types.js';

const skip = await engineSkip();
const A = newSpaceId();
const B = newSpaceId();
let t: TestEngines;
const drivers = new Map<string, ContainerDriver>();
const driverOf = (spaceId: string) => drivers.get(spaceId)!;

before(async () => {
  if (skip) return;
  t = await testEngines();
  const tb = await busyboxTarball();
  try {
    for (const s of [A, B]) {
      drivers.set(s, await t.driver(s));
      await driverOf(s).loadImage(s, 'busybox', createReadStream(tb.path));
    }
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await t.cleanup();
});

/** Runs a client in the space that tries `nc` to `host`:8080 up to `tries` times; returns its exit code and output. */
async function probe(spaceId: string, host: string, tries: number) {
  const driver = driverOf(spaceId);
  const spec = specFor(spaceId, t.space(spaceId).parent, {
    name: `probe-${Math.random().toString(36).slice(2, 8)}`,
    command: [
      'sh',
      '-c',
      `for i in $(seq ${tries}); do nc -w 3 ${host} 8080 </dev/null && exit 0; sleep 0.5; done; exit 1`,
    ],
  });
  await driver.create(spec);
  await driver.start(spaceId, spec.containerId);
  const s = await waitForState(driver, spaceId, spec.containerId, ['exited'], 30_000);
  const out = await driver.logs(spaceId, spec.containerId, { tailLines: 50 });
  return { exitCode: s.exitCode, text: out.text };
}

/** The id of the network a container of the space is attached to. */
async function networkOf(spaceId: string, dockerId: string): Promise<string | undefined> {
  const info = await (await t.docker(spaceId)).getContainer(dockerId).inspect();
  return info.NetworkSettings.Networks[networkName(spaceId)]?.NetworkID;
}

test(
  "a space's first container makes one labelled network, on the space's subnet, gateway and bridge, from the daemon's file, once",
  { skip },
  async () => {
    const specs = [A, A, B, B].map((s, i) => specFor(s, t.space(s).parent, { name: `net-${i}` }));
    const [a1, a2] = specs as [ContainerSpec, ContainerSpec, ContainerSpec, ContainerSpec];
    const id = await networkOf(A, (await driverOf(A).create(a1)).dockerId);
    assert.ok(id);
    assert.equal(await networkOf(A, (await driverOf(A).create(a2)).dockerId), id, 'made once');
    const [x, y] = await Promise.all(specs.slice(2).map((c) => driverOf(B).create(c)));
    assert.equal(await networkOf(B, x!.dockerId), await networkOf(B, y!.dockerId), 'concurrent creates agree');
    for (const c of specs) await driverOf(c.spaceId).remove(c.spaceId, c.containerId);
    const info = await (await t.docker(A)).getNetwork(id).inspect();
    assert.equal(info.Name, networkName(A));
    assert.equal(info.Driver, 'bridge');
    assert.equal(info.Internal, false, 'the bridge holds the gateway; the rules decide what passes');
    assert.equal(info.Labels?.[LABEL_SPACE], A);
    // The daemon's choices, as the engine recorded them (libpod: the Docker API shows no bridge name).
    const own = await t.libpod<{
      network_interface: string;
      subnets: { subnet: string; gateway: string; lease_range?: { start_ip: string; end_ip: string } }[];
      internal: boolean;
      dns_enabled: boolean;
    }>(A, `/networks/${networkName(A)}/json`);
    assert.equal(own.network_interface, bridgeName(A));
    const sub = spaceSubnet(t.space(A).subnet);
    assert.deepEqual(own.subnets, [
      {
        subnet: sub.subnet,
        gateway: sub.gateway,
        lease_range: { start_ip: sub.containers.first, end_ip: sub.containers.last },
      },
    ]);
    assert.equal(own.dns_enabled, false);
    // Each engine knows its own network only.
    assert.deepEqual(
      (await (await t.docker(A)).listNetworks()).map((n) => n.Name).filter((n) => n.startsWith('ocs-')),
      [networkName(A)],
    );
    assert.deepEqual(
      (await (await t.docker(B)).listNetworks()).map((n) => n.Name).filter((n) => n.startsWith('ocs-')),
      [networkName(B)],
    );
  },
);

test('containers of one space reach each other; another space cannot', { skip }, async (tc) => {
  const server = specFor(A, t.space(A).parent, {
    name: 'server',
    command: ['sh', '-c', 'while true; do echo pong | nc -l -p 8080; done'],
  });
  const { dockerId } = await driverOf(A).create(server);
  await driverOf(A).start(A, server.containerId);
  const ip = (await (await t.docker(A)).getContainer(dockerId).inspect()).NetworkSettings.Networks[networkName(A)]
    ?.IPAddress;
  assert.ok(ip, 'the server has an address on the space network');
  assert.ok(existsSync(`/sys/class/net/${bridgeName(A)}`), "the space's bridge exists on the host");

  const byIp = await probe(A, ip, 10);
  assert.equal(byIp.exitCode, 0, byIp.text);
  assert.match(byIp.text, /pong/);

  // The server is known to be listening now; B tries its address directly.
  const t0 = Date.now();
  const cross = await probe(B, ip, 1);
  tc.diagnostic(`cross-space attempt failed after ${Date.now() - t0} ms: ${JSON.stringify(cross.text.trim())}`);
  assert.notEqual(cross.exitCode, 0);
  assert.doesNotMatch(cross.text, /pong/);
  const crossName = await probe(B, 'server', 1);
  assert.notEqual(crossName.exitCode, 0, "A's names do not resolve in B");
  assert.doesNotMatch(crossName.text, /pong/);
});

test('a network that only borrows the name is never adopted', { skip }, async () => {
  // In C's engine, a network with the name of C's network but not its label.
  const C = newSpaceId();
  const driver = await t.driver(C);
  const tb = await busyboxTarball();
  try {
    await driver.loadImage(C, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
  const engine = await t.docker(C);
  const squatter = await engine.createNetwork({
    Name: networkName(C),
    Internal: true,
    Labels: { [LABEL_SPACE]: 'sp_someoneelse' },
  });
  try {
    await rejectsWith(driver.create(specFor(C, t.space(C).parent)), 'conflict');
    await squatter.inspect(); // still there
  } finally {
    await squatter.remove();
  }
});
