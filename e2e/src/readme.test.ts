/**
 * The commands a new user copies from the README: the test suite is one command, and CI runs
 * that same command, so a green CI run means the README works.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const repo = new URL('../../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, repo), 'utf8');

test("the README's test command is one command, and .ci/run runs that same command", () => {
  const readme = read('README.md');
  const block = /## The two commands[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  const commands = block.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  assert.equal(commands.length, 2, block);
  const second = (commands[1] as string).trim();
  assert.doesNotMatch(second, /&&|;|\|/, 'one command, not a chain');
  assert.match(read('.ci/run'), new RegExp(`^bash ${second.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));

  // And it still does what the chain did, in the same order: the pinned Node before anything
  // that runs node, then every tier of the suite.
  const script = read(second);
  const at = (s: string) => script.search(new RegExp(`^[^#\\n]*${s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`, 'm'));
  const steps = [
    'scripts/install-host-deps.sh',
    'scripts/install-node.sh --env',
    'scripts/npm-ci-if-stale.sh',
    'scripts/start-services.sh',
    'tier unit',
    'tier host',
    'tier guest',
  ];
  for (const s of steps) assert.ok(at(s) >= 0, `${second} does not run ${s}`);
  assert.deepEqual(
    [...steps].sort((a, b) => at(a) - at(b)),
    steps,
  );
});
