/**
 * The host behind a space network's gateway, against real dockerd and iptables: without the
 * guard a container reaches a service listening on all of the host's addresses; with it, not.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { createServer } from 'node:net';
import { createDockerDriver } from './driver.js';
import { guardHostInput, hostGuarded, unguardHostInput } from './host-guard.js';
import { networkName } from './names.js';
import {
  busyboxTarball,
  cleanupSpaces,
  docker,
  dockerSkip,
  newSpaceId,
  specFor,
  testCgroups,
  waitForState,
} from './test-support.js';

const skip = await dockerSkip();
const driver = createDockerDriver();
const A = newSpaceId();
const cgroups = testCgroups();
let parent = '';
let guardedBefore = false;

before(async () => {
  if (skip) return;
  guardedBefore = await hostGuarded();
  parent = cgroups.parentFor(A);
  const tb = await busyboxTarball();
  try {
    await driver.loadImage(A, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await cleanupSpaces([A]);
  cgroups.remove();
  // The rule is the node's policy: put the host back as this test found it.
  if (guardedBefore) await guardHostInput();
  else await unguardHostInput();
});

/** A container of A tries the host's listener at the network's gateway; true when it got the banner. */
async function reachesHost(port: number): Promise<{ reached: boolean; text: string }> {
  await driver.ensureNetwork(A);
  const net = await docker.getNetwork(networkName(A)).inspect();
  const gateway = (net.IPAM?.Config?.[0] as { Gateway?: string } | undefined)?.Gateway;
  assert.ok(gateway, 'the space network has a gateway address');
  const spec = specFor(A, parent, {
    name: `probe-${Math.random().toString(36).slice(2, 8)}`,
    command: ['sh', '-c', `nc -w 3 ${gateway} ${port} </dev/null`],
  });
  await driver.create(spec);
  await driver.start(A, spec.containerId);
  await waitForState(driver, A, spec.containerId, ['exited'], 30_000);
  const text = (await driver.logs(A, spec.containerId, { tailLines: 20 })).text;
  await driver.remove(A, spec.containerId);
  return { reached: text.includes('host-service'), text };
}

test(
  "a container cannot reach the host's services through its network's gateway",
  { skip, timeout: 120_000 },
  async () => {
    const server = createServer((s) => s.end('host-service\n'));
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      await unguardHostInput();
      const open = await reachesHost(port);
      assert.equal(open.reached, true, `control: without the guard the host answers (${open.text})`);
      await guardHostInput();
      await guardHostInput();
      assert.equal(await hostGuarded(), true);
      const shut = await reachesHost(port);
      assert.equal(shut.reached, false, shut.text);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  },
);
