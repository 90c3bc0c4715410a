/** Under CI a missing service fails the run; elsewhere it is a skip that says how to make it fail. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { requireHost } from './require-host.js';

test('a missing service is a skip outside CI and a failure under OCS_REQUIRE_HOST=1', (t) => {
  const saved = process.env.OCS_REQUIRE_HOST;
  t.after(() => {
    if (saved === undefined) delete process.env.OCS_REQUIRE_HOST;
    else process.env.OCS_REQUIRE_HOST = saved;
  });
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
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, output: r.stdout + r.stderr };
}

test('a Docker driver test file fails, not skips, when podman is missing under OCS_REQUIRE_HOST=1', () => {
  // The spaces' engines: a podman binary that is not there.
  const r = runTestFile('./docker/docker-spaces.test.js', { OCS_PODMAN: '/nonexistent/podman' });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /OCS_REQUIRE_HOST=1 but podman is not usable here: podman \(\/nonexistent\/podman\)/);
});

test('a Docker driver test file fails, not skips, when its image builder is gone under OCS_REQUIRE_HOST=1', () => {
  // dockerd builds the test image: a socket nobody listens on.
  const r = runTestFile('./docker/docker-spaces.test.js', { OCS_DOCKER_SOCKET: '/nonexistent/docker.sock' });
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /OCS_REQUIRE_HOST=1 but dockerd \(it builds the test image\) is not usable here/);
});
