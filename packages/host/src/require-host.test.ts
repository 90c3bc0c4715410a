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

test('a Docker test file fails, not skips, when dockerd is gone under OCS_REQUIRE_HOST=1', () => {
  // The real test file, run against a socket nobody listens on.
  const file = new URL('./docker/docker-spaces.test.js', import.meta.url).pathname;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    OCS_REQUIRE_HOST: '1',
    OCS_DOCKER_SOCKET: '/nonexistent/docker.sock',
  };
  delete env.NODE_TEST_CONTEXT; // a runner of its own, not a child of ours
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.notEqual(r.status, 0, r.stdout);
  assert.match(r.stdout + r.stderr, /OCS_REQUIRE_HOST=1 but dockerd is not usable here/);
});
