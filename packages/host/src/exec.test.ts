import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, run } from './exec.js';

test('runs without a shell: arguments reach the program verbatim', async () => {
  const hostile = '$(touch /tmp/ocs-exec-pwned); `id` | rm -rf / ; echo "*"';
  const { stdout } = await run('printf', ['%s', hostile]);
  assert.equal(stdout, hostile);
  assert.equal(existsSync('/tmp/ocs-exec-pwned'), false);
});

test('stdin is written through a pipe and closed', async () => {
  const secret = new Uint8Array([0, 1, 2, 250, 255, 10, 13]);
  const { stdout } = await run('od', ['-An', '-tu1'], { stdin: secret });
  assert.deepEqual(stdout.trim().split(/\s+/).map(Number), [...secret]);
});

test('without stdin the child reads EOF instead of waiting for a prompt', async () => {
  const { stdout } = await run('cat', [], { timeoutMs: 5000 });
  assert.equal(stdout, '');
});

test('a non-zero exit carries cmd, args, code and trimmed stderr, but never stdin', async () => {
  const secret = new TextEncoder().encode('TOP-SECRET-KEY-BYTES');
  const err = await run('sh', ['-c', 'cat >/dev/null; echo "  went wrong  " >&2; exit 3', 'x'], { stdin: secret }).then(
    () => assert.fail('should have failed'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CommandError);
  assert.equal(err.cmd, 'sh');
  assert.deepEqual(err.args, ['-c', 'cat >/dev/null; echo "  went wrong  " >&2; exit 3', 'x']);
  assert.equal(err.exitCode, 3);
  assert.equal(err.stderr, 'went wrong');
  assert.match(err.message, /exited with code 3: went wrong$/);
  assert.equal(err.message.includes('TOP-SECRET'), false);
  assert.equal(JSON.stringify(err).includes('TOP-SECRET'), false);
});

test('a timeout kills the child', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-exec-'));
  try {
    const pidFile = join(dir, 'pid');
    const started = Date.now();
    const err = await run('sh', ['-c', 'echo $$ > "$1"; exec sleep 30', 'x', pidFile], { timeoutMs: 300 }).then(
      () => assert.fail('should have timed out'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CommandError);
    assert.equal(err.timedOut, true);
    assert.match(err.message, /timed out/);
    assert.ok(Date.now() - started < 5000);
    const { readFileSync } = await import('node:fs');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the child is gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing program is a CommandError, not a crash', async () => {
  const err = await run('/nonexistent/ocs-no-such-tool', ['a']).then(
    () => assert.fail('should have failed'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CommandError);
  assert.equal(err.exitCode, null);
  assert.match(err.message, /could not be started/);
});

test('the environment is minimal: the daemon environment does not leak, C locale', async () => {
  process.env.OCS_EXEC_TEST_LEAK = 'leaked';
  try {
    const { stdout } = await run('env', [], { env: { EXTRA: 'yes' } });
    const vars = new Set(
      stdout
        .trim()
        .split('\n')
        .map((l) => l.split('=')[0]),
    );
    assert.equal(vars.has('OCS_EXEC_TEST_LEAK'), false);
    assert.ok(vars.has('PATH'));
    assert.ok(stdout.includes('LC_ALL=C\n'));
    assert.ok(stdout.includes('EXTRA=yes'));
  } finally {
    delete process.env.OCS_EXEC_TEST_LEAK;
  }
});

test('extra file descriptors are handed over as fd 3, 4, …', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-exec-'));
  try {
    writeFileSync(join(dir, 'a'), 'first');
    writeFileSync(join(dir, 'b'), 'second');
    const a = openSync(join(dir, 'a'), 'r');
    const b = openSync(join(dir, 'b'), 'r');
    try {
      const { stdout } = await run('sh', ['-c', 'cat /proc/self/fd/3; echo; cat /proc/self/fd/4'], { fds: [a, b] });
      assert.equal(stdout, 'first\nsecond');
    } finally {
      closeSync(a);
      closeSync(b);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
