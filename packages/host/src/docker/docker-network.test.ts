/**
 * Per-space networks against the real dockerd: containers of one space reach each other (by
 * IP and by the owner's container name); a container of another space cannot.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { createDockerDriver } from './driver.js';
import { LABEL_SPACE, bridgeName, networkName } from './names.js';
import {
  busyboxTarball,
  cleanupSpaces,
  docker,
  dockerSkip,
  newSpaceId,
  rejectsWith,
  specFor,
  testCgroups,
  waitForState,
} from './test-support.js';

const skip = await dockerSkip();
const driver = createDockerDriver();
const A = newSpaceId();
const B = newSpaceId();
const cgroups = testCgroups();
let parentA = '';
let parentB = '';

before(async () => {
  if (skip) return;
  parentA = cgroups.parentFor(A);
  parentB = cgroups.parentFor(B);
  const tb = await busyboxTarball();
  try {
    await driver.loadImage(A, 'busybox', createReadStream(tb.path));
    await driver.loadImage(B, 'busybox', createReadStream(tb.path));
  } finally {
    tb.remove();
  }
});

after(async () => {
  if (skip) return;
  await cleanupSpaces([A, B]);
  cgroups.remove();
});

/** Runs a client that tries `nc` to `host`:8080 up to `tries` times; returns its exit code and output. */
async function probe(spaceId: string, parent: string, host: string, tries: number) {
  const spec = specFor(spaceId, parent, {
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

test('ensureNetwork: one internal, labelled bridge per space, created once', { skip }, async () => {
  const id = await driver.ensureNetwork(A);
  assert.equal(await driver.ensureNetwork(A), id, 'idempotent');
  const [x, y] = await Promise.all([driver.ensureNetwork(B), driver.ensureNetwork(B)]);
  assert.equal(x, y, 'concurrent calls agree');
  const info = await docker.getNetwork(id).inspect();
  assert.equal(info.Name, networkName(A));
  assert.equal(info.Driver, 'bridge');
  assert.equal(info.Internal, true);
  assert.equal(info.Labels?.[LABEL_SPACE], A);
  assert.equal(info.Options?.['com.docker.network.bridge.name'], bridgeName(A));
});

test('containers of one space reach each other; another space cannot', { skip }, async (t) => {
  const server = specFor(A, parentA, {
    name: 'server',
    command: ['sh', '-c', 'while true; do echo pong | nc -l -p 8080; done'],
  });
  const { dockerId } = await driver.create(server);
  await driver.start(A, server.containerId);
  const ip = (await docker.getContainer(dockerId).inspect()).NetworkSettings.Networks[networkName(A)]?.IPAddress;
  assert.ok(ip, 'the server has an address on the space network');

  const byIp = await probe(A, parentA, ip, 10);
  assert.equal(byIp.exitCode, 0, byIp.text);
  assert.match(byIp.text, /pong/);
  const byName = await probe(A, parentA, 'server', 10);
  assert.equal(byName.exitCode, 0, `the owner's container name resolves on the space network: ${byName.text}`);
  assert.match(byName.text, /pong/);

  // The server is known to be listening now; B tries its address directly.
  const t0 = Date.now();
  const cross = await probe(B, parentB, ip, 1);
  t.diagnostic(`cross-space attempt failed after ${Date.now() - t0} ms: ${JSON.stringify(cross.text.trim())}`);
  assert.notEqual(cross.exitCode, 0);
  assert.doesNotMatch(cross.text, /pong/);
  const crossName = await probe(B, parentB, 'server', 1);
  assert.notEqual(crossName.exitCode, 0, "A's names do not resolve in B");
});

test('removeNetwork: conflict while containers are attached, then gone, then idempotent', { skip }, async () => {
  await rejectsWith(driver.removeNetwork(A), 'conflict');
  for (const c of await driver.list(A)) await driver.remove(A, c.containerId);
  await driver.removeNetwork(A);
  await assert.rejects(
    docker.getNetwork(networkName(A)).inspect(),
    (e: { statusCode?: number }) => e.statusCode === 404,
  );
  await driver.removeNetwork(A);
});

test('a network that only borrows the name is never adopted or removed', { skip }, async () => {
  const C = newSpaceId();
  const squatter = await docker.createNetwork({
    Name: networkName(C),
    Internal: true,
    Labels: { [LABEL_SPACE]: 'sp_someoneelse' },
  });
  try {
    await rejectsWith(driver.ensureNetwork(C), 'conflict');
    await driver.removeNetwork(C);
    await squatter.inspect(); // still there
  } finally {
    await squatter.remove();
  }
});
