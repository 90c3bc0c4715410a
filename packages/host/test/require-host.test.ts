/** Under CI a missing service fails the run; elsewhere it is a skip that says how to make it fail. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { requireHost } from '@ocs/host/testing/require-host';

/** Sets (or with undefined, removes) environment variables until the test ends. */
function withEnv(t: { after(fn: () => void): void }, vars: Record<string, string | undefined>) {
  for (const [name, value] of Object.entries(vars)) {
    const saved = process.env[name];
    t.after(() => {
      if (saved === undefined) delete process.env[name];
      else process.env[name] = saved;
    });
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}

test('a missing service is a skip outside CI and a failure under OCS_REQUIRE_HOST=1', (t) => {
  withEnv(t, { OCS_TEST_TIER: undefined, OCS_REQUIRE_HOST: process.env.OCS_REQUIRE_HOST });
  assert.equal(requireHost('dockerd', false), false);
  delete process.env.OCS_REQUIRE_HOST;
  assert.match(String(requireHost('dockerd', 'not reachable')), /not reachable \(set OCS_REQUIRE_HOST=1/);
  process.env.OCS_REQUIRE_HOST = '1';
  assert.equal(requireHost('dockerd', false), false);
  assert.throws(
    () => requireHost('dockerd', 'not reachable'),
    /OCS_REQUIRE_HOST=1 but dockerd is not usable here: not reachable/,
  );
});

/** Runs the real test file with `env` added, as a runner of its own; returns its status and output. */
function runTestFile(path: string, extra: NodeJS.ProcessEnv) {
  const file = new URL(path, import.meta.url).pathname;
  const env: NodeJS.ProcessEnv = { ...process.env, OCS_REQUIRE_HOST: '1', ...extra };
  delete env.NODE_TEST_CONTEXT; // a runner of its own, not a child of ours
  delete env.OCS_TEST_TIER; // the file is a host-tier file, run as the host tier runs it
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, output: r.stdout + r.stderr };
}

test('a container driver test file fails, not skips, when podman is missing under OCS_REQUIRE_HOST=1', () => {
  // The spaces' engines: a podman binary that is not there.
  const r = runTestFile('./podman/podman-network.host.test.js', { OCS_PODMAN: '/nonexistent/podman' });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /OCS_REQUIRE_HOST=1 but podman is not usable here: podman \(\/nonexistent\/podman\)/);
});

test('a container driver test file fails, not skips, when its image builder is gone under OCS_REQUIRE_HOST=1', () => {
  // dockerd builds the test image: a socket nobody listens on.
  const r = runTestFile('./podman/podman-network.host.test.js', { OCS_DOCKER_SOCKET: '/nonexistent/docker.sock' });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /OCS_REQUIRE_HOST=1 but dockerd \(it builds the test image\) is not usable here/);
});

test('in the unit tier, asking for a host service fails even where the service is there', (t) => {
  withEnv(t, { OCS_TEST_TIER: 'unit', OCS_REQUIRE_HOST: undefined });
  assert.throws(() => requireHost('dockerd', false), /dockerd is a host service and this file runs in the unit tier/);
  assert.throws(() => requireHost('dockerd', 'not reachable'), /name it \*\.host\.test\.ts/);
});
