/**
 * The host behind a space's network, against a space's own podman engine and the node's real
 * nftables rules. The space's bridge holds the workloads' gateway, an address of the host: only
 * the node's table keeps the host's services (the daemon's port among them, listening on all
 * addresses) out of reach. Without it (the control) a container reaches a service of the host.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { run } from '#src/exec.js';
import { NODE_TABLE } from '#src/network/nft-rules.js';
import { bridgeName } from '#src/podman/names.js';
import { spaceSubnet } from '#src/podman/network-conflist.js';
import {
  busyboxTarball,
  engineSkip,
  newSpaceId,
  specFor,
  testEngines,
  waitForState,
  type TestEngines,
} from '@ocs/host/testing/podman';
import type { ContainerDriver } from '#src/podman/types.js';

const skip = await engineSkip();
const A = newSpaceId();
let t: TestEngines;
let driver: ContainerDriver;
let nodeTableWasThere = true;

before(async () => {
  if (skip) return;
  t = await testEngines();
  nodeTableWasThere = await t.firewall.installed();
  driver = await t.driver(A);
  const tb = await busyboxTarball();
  try {
    await driver.loadImage(A, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await t.cleanup();
});

/** Runs a container of A that tries each `host`:`port` once; returns its output (each answer is a line). */
async function tryFromA(hosts: string[], port: number): Promise<string> {
  const spec = specFor(A, t.space(A).parent, {
    name: `probe-${Math.random().toString(36).slice(2, 8)}`,
    command: ['sh', '-c', `for h in ${hosts.join(' ')}; do nc -w 2 $h ${port} </dev/null; done; true`],
  });
  await driver.create(spec);
  await driver.start(A, spec.containerId);
  await waitForState(driver, A, spec.containerId, ['exited'], 60_000);
  const text = (await driver.logs(A, spec.containerId, { tailLines: 50 })).text;
  await driver.remove(A, spec.containerId);
  return text;
}

/** A TCP service of the host on all its addresses, answering `host-service`. */
async function hostService<T>(fn: (port: number) => Promise<T>): Promise<T> {
  const server = createServer((s) => s.end('host-service\n'));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  try {
    return await fn((server.address() as { port: number }).port);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

test(
  "under the node's rules a container reaches none of the host's addresses, its gateway included",
  { skip, timeout: 180_000 },
  async (tc) => {
    // A listener in the space's own network answers the same probe: the probe works.
    const server = specFor(A, t.space(A).parent, {
      name: 'server',
      command: ['sh', '-c', 'while true; do echo in-space | nc -l -p 8080; done'],
    });
    const { dockerId } = await driver.create(server);
    await driver.start(A, server.containerId);
    const serverIp = (await (await t.docker(A)).getContainer(dockerId).inspect()).NetworkSettings.Networks[`ocs-${A}`]
      ?.IPAddress;
    assert.ok(serverIp);
    assert.match(await tryFromA([serverIp], 8080), /in-space/, 'control: the probe reaches a listener in the space');
    await driver.remove(A, server.containerId);

    const gateway = spaceSubnet(t.space(A).subnet).gateway;
    const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', bridgeName(A)]);
    assert.match(stdout, new RegExp(`inet ${gateway.replaceAll('.', '\\.')}/`), 'the bridge holds the gateway');
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && i.family === 'IPv4' && !i.internal)
      .map((i) => i!.address)
      .filter((a) => a !== gateway);
    assert.ok(hostAddresses.length > 0, 'the host has addresses beyond the bridge');
    await hostService(async (port) => {
      const shut = await tryFromA([gateway, ...hostAddresses, '127.0.0.1'], port);
      assert.doesNotMatch(shut, /host-service/, `tried the gateway and ${hostAddresses.join(', ')}: ${shut}`);
      if (nodeTableWasThere) {
        tc.diagnostic('the node table was there before this test (another node): the control is left out');
        return;
      }
      // The control: without the node's rules the host answers on the gateway.
      await t.firewall.remove(A, bridgeName(A));
      await run('nft', ['delete', 'table', 'inet', NODE_TABLE]);
      try {
        const open = await tryFromA([gateway], port);
        assert.match(open, /host-service/, `control: without the rules the host answers (${open})`);
      } finally {
        await t.rules(A, {});
      }
    });
  },
);
