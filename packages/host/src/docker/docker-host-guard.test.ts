/**
 * The host behind a space's network, against a space's own podman engine and the real iptables.
 * As the engine makes it, the space's bridge holds no host address and a container has a route
 * to its own subnet only, so it reaches no service of the host, guard or not. Should the bridge
 * ever hold an address of the host (as dockerd's bridges do), the guard is what keeps the host's
 * services out of reach: without it a container reaches a service listening on all addresses.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { run } from '../exec.js';
import { guardHostInput, hostGuarded, unguardHostInput } from './host-guard.js';
import { bridgeName } from './names.js';
import {
  busyboxTarball,
  engineSkip,
  newSpaceId,
  specFor,
  testEngines,
  waitForState,
  type TestEngines,
} from './test-support.js';
import type { DockerDriver } from './types.js';

const skip = await engineSkip();
const A = newSpaceId();
let t: TestEngines;
let driver: DockerDriver;
let guardedBefore = false;

before(async () => {
  if (skip) return;
  guardedBefore = await hostGuarded();
  t = await testEngines();
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
  await t.cleanup(); // the bridge goes with the space, with any address the test gave it
  // The rule is the node's policy: put the host back as this test found it.
  if (guardedBefore) await guardHostInput();
  else await unguardHostInput();
});

/** Runs a container of A that tries each `host`:`port` once; returns its output (each answer is a line). */
async function tryFromA(hosts: string[], port: number): Promise<string> {
  const spec = specFor(A, t.space(A).parent, {
    name: `probe-${Math.random().toString(36).slice(2, 8)}`,
    command: ['sh', '-c', `for h in ${hosts.join(' ')}; do nc -w 3 $h ${port} </dev/null; done; true`],
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

/** The first host address of the space's /26: where dockerd would put the host on the bridge. */
function gatewayOf(subnet: string): string {
  const [net] = subnet.split('/');
  const parts = (net ?? '').split('.').map(Number);
  return [parts[0], parts[1], parts[2], (parts[3] ?? 0) + 1].join('.');
}

test(
  "a container reaches none of the host's addresses through its space's network, guard or not",
  { skip, timeout: 120_000 },
  async () => {
    await driver.ensureNetwork(A);
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

    const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', bridgeName(A)]);
    assert.equal(stdout.trim(), '', "the space's bridge holds no host address");
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && i.family === 'IPv4' && !i.internal)
      .map((i) => i!.address);
    assert.ok(hostAddresses.length > 0);
    await unguardHostInput();
    const text = await hostService((port) => tryFromA([...hostAddresses, gatewayOf(t.space(A).subnet)], port));
    assert.doesNotMatch(text, /host-service/, `tried ${hostAddresses.join(', ')} and the gateway address`);
  },
);

test(
  'should the bridge hold a host address, the guard keeps the host out of reach',
  { skip, timeout: 120_000 },
  async () => {
    await driver.ensureNetwork(A);
    const gateway = gatewayOf(t.space(A).subnet);
    // CNI makes the bridge for the first container; then the test's own bridge gets the address
    // dockerd would give it.
    if (!existsSync(`/sys/class/net/${bridgeName(A)}`)) await tryFromA([], 1);
    await run('ip', ['addr', 'add', `${gateway}/26`, 'dev', bridgeName(A)]);
    try {
      await hostService(async (port) => {
        await unguardHostInput();
        const open = await tryFromA([gateway], port);
        assert.match(open, /host-service/, `control: without the guard the host answers (${open})`);
        await guardHostInput();
        await guardHostInput();
        assert.equal(await hostGuarded(), true);
        const shut = await tryFromA([gateway], port);
        assert.doesNotMatch(shut, /host-service/, shut);
      });
    } finally {
      await run('ip', ['addr', 'del', `${gateway}/26`, 'dev', bridgeName(A)]);
    }
  },
);
