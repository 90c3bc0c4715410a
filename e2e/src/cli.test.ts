/**
 * `ocs` driven as a user drives it: spawned processes with their own config directory, against
 * a real node daemon, its space processes and its container engine. The happy path (key, node,
 * reserve, image, volume, run, logs, lock, unlock, backup, restore, destroy) and the unhappy ones, each with its
 * message and exit code (docs/cli.md).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { buildBusyboxImage } from '@ocs/host/testing';
import { mintToken } from '@ocs/protocol';
import { startTestNode, MiB, type TestNode } from './harness.js';
import { OCS, ok, runOcs, runOcsOnTerminal, type OcsResult } from './ocs-process.js';

let t: TestNode;
let dir: string;
let imagePath: string;
let token: string;

/** Runs `ocs args…` as a user would, with its own config directory, key and token. */
const ocs = (args: string[], env: Record<string, string> = {}) => runOcs(dir, token, args, env);
const json = <T>(r: OcsResult): T => JSON.parse(ok(r)) as T;
/** A refusal as the user sees it: the exit code, the stable code and a hint on stderr. */
function refused(r: OcsResult, exit: number, code: string): void {
  assert.equal(r.code, exit, `expected exit ${exit} (${code}), got ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, new RegExp(`\\(${code}\\)`));
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
}

before(async () => {
  t = await startTestNode({ workloads: true });
  dir = mkdtempSync(join(tmpdir(), 'ocs-cli-'));
  imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
  // The CLI's own way to a token on a development node.
  token = (
    await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, [OCS, 'token', '--state-dir', t.config.stateDir, '--org', 'org-a'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('error', reject);
      p.on('close', (c) => (c === 0 ? resolve(out) : reject(new Error(`ocs token exited ${c}`))));
    })
  ).trim();
});

after(async () => {
  await t.stop();
  rmSync(dir, { recursive: true, force: true });
  rmSync(dirname(imagePath), { recursive: true, force: true });
});

test('an owner journey: key, node, reserve, image, volume, run, logs, lock, unlock, backup, restore, destroy', async () => {
  const key = json<{ file: string; fingerprint: string }>(await ocs(['--json', 'key', 'new']));
  assert.equal(statSync(key.file).mode & 0o777, 0o600);
  assert.match(readFileSync(`${key.file}.pub`, 'utf8'), /^ssh-ed25519 /);

  // Trust on first use: refused without a decision, accepted with the farmer's fingerprint.
  const undecided = await ocs(['node', 'add', 'dev', t.node.url]);
  assert.equal(undecided.code, 2);
  assert.match(undecided.stderr, /fingerprint/);
  ok(await ocs(['node', 'add', 'dev', t.node.url, '--fingerprint', t.node.tls.fingerprint]));
  assert.match(ok(await ocs(['node', 'ls'])), /\*\s+dev\s+https:\/\/127\.0\.0\.1/);

  const space = json<{ id: string; state: string }>(
    await ocs([
      '--json',
      'space',
      'reserve',
      '--cpu',
      '1',
      '--memory',
      '512MiB',
      '--storage',
      '128MiB',
      '--lease',
      '1h',
    ]),
  );
  assert.equal(space.state, 'active');
  const kept = join(dir, 'config', 'spaces', 'dev', `${space.id}.json`);
  assert.equal(statSync(kept).mode & 0o777, 0o600);
  assert.match(ok(await ocs(['space', 'ls'])), new RegExp(`\\*\\s+${space.id}\\s+active.*here`));

  assert.match(ok(await ocs(['image', 'load', imagePath, '--name', 'busybox'])), /busybox: loaded/);
  ok(await ocs(['volume', 'create', 'data', '--size', '16MiB']));
  ok(
    await ocs([
      'run',
      '--name',
      'hello',
      '-v',
      'data:/data',
      '-e',
      'WHO=ocs',
      'busybox',
      '--',
      'sh',
      '-c',
      'echo "hello from $WHO"; echo kept > /data/f',
    ]),
  );
  const deadline = Date.now() + 20_000;
  while (!/exited/.test(ok(await ocs(['container', 'ls']))) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 300));
  assert.match(ok(await ocs(['container', 'logs', 'hello'])), /hello from ocs/);
  // -f prints each line once, as it comes, and ends when the container does.
  ok(
    await ocs([
      'run',
      '--name',
      'ticker',
      'busybox',
      '--',
      'sh',
      '-c',
      'for i in 1 2 3; do echo tick $i; sleep 1; done',
    ]),
  );
  const followed = ok(await ocs(['container', 'logs', '-f', 'ticker']));
  assert.deepEqual(followed.trim().split('\n'), ['tick 1', 'tick 2', 'tick 3']);
  ok(await ocs(['container', 'rm', 'ticker']));

  assert.match(ok(await ocs(['space', 'lock'])), /locked/);
  refused(await ocs(['container', 'ls']), 5, 'space_locked');
  assert.match(ok(await ocs(['space', 'unlock'])), /active/);
  assert.match(ok(await ocs(['volume', 'ls'])), /data/);
  assert.match(ok(await ocs(['space', 'key', 'export'])), /BEGIN AGE ENCRYPTED FILE/);
  // A backup of the running space: locked for the copy, unlocked again, a signed archive left.
  const marker = join(dir, 'marker.txt');
  writeFileSync(marker, `written before the backup ${randomBytes(8).toString('hex')}\n`);
  const uploaded = json<{ sha256: string }>(await ocs(['--json', 'file', 'upload', marker]));
  const backup = join(dir, 'space.ocsa');
  assert.match(
    ok(await ocs(['space', 'backup', '-o', backup])),
    /written to .*space\.ocsa .*signed with your key\); unlocked again/,
  );
  assert.equal(readFileSync(backup).subarray(0, 4).toString(), 'OCSA');
  assert.match(ok(await ocs(['volume', 'ls'])), /data/);
  refused(await ocs(['space', 'backup', '-o', backup]), 2, 'usage');

  // Restored: a new space (a fork), locked, that opens with the archived space's wrapped key,
  // kept here under its id; the file written before the backup is in it.
  const restored = ok(await ocs(['space', 'restore', backup, '--lease', '1h', '--name', 'fork']));
  const forkId = /^space:\s+(sp_[a-z0-9]+)$/m.exec(restored)?.[1];
  assert.ok(forkId && forkId !== space.id, restored);
  assert.match(restored, /state:\s+locked/);
  assert.match(restored, new RegExp(`restored from ${space.id}`));
  assert.match(restored, new RegExp(`open it: ocs space unlock ${forkId}$`, 'm'));
  assert.match(ok(await ocs(['space', 'unlock', forkId])), new RegExp(`${forkId}: active`));
  const files = json<{ files: { name: string; sha256: string }[] }>(await ocs(['--json', 'file', 'ls']));
  assert.deepEqual(
    files.files.map((f) => [f.name, f.sha256]),
    [['marker.txt', uploaded.sha256]],
  );
  // Its container came with it, its log too.
  assert.match(ok(await ocs(['container', 'logs', 'hello'])), /hello from ocs/);

  ok(await ocs(['space', 'destroy', forkId]));
  ok(await ocs(['space', 'destroy', space.id]));
  refused(await ocs(['space', 'show', space.id]), 4, 'not_found');
  // The backup outlives its space: with the space and its key's entry here gone, the wrapped
  // key the backup left beside the archive opens another restore.
  assert.match(readFileSync(`${backup}.key`, 'utf8'), /BEGIN AGE ENCRYPTED FILE/);
  const again = ok(await ocs(['space', 'restore', backup, '--lease', '1h']));
  const againId = /^space:\s+(sp_[a-z0-9]+)$/m.exec(again)?.[1];
  assert.ok(againId, again);
  assert.match(ok(await ocs(['space', 'unlock', againId])), new RegExp(`${againId}: active`));
  assert.match(ok(await ocs(['container', 'logs', 'hello'])), /hello from ocs/);
  ok(await ocs(['space', 'destroy', againId]));
  assert.match(ok(await ocs(['audit', 'verify'])), /entries, chain intact, head [0-9a-f]{64}/);
});

test('refusals say what went wrong and what to do, with their exit codes', async () => {
  const home = { OCS_CONFIG_DIR: join(dir, 'config2'), OCS_KEY: join(dir, 'id2') };
  ok(await ocs(['key', 'new'], home));
  ok(await ocs(['node', 'add', 'dev', t.node.url, '--yes'], home));
  const space = json<{ id: string }>(
    await ocs(['--json', 'space', 'reserve', '--cpu', '0.5', '--memory', '128MiB', '--storage', '16MiB'], home),
  );

  // Another key: not the owner.
  const other = join(dir, 'other_key');
  ok(await ocs(['key', 'new', '--file', other], home));
  refused(await ocs(['--key', other, 'space', 'lock', space.id], home), 3, 'not_owner');

  // An expired token.
  const issuerKey = createPrivateKey(readFileSync(join(t.config.stateDir, 'keys', 'dev-issuer.pem'), 'utf8'));
  const expired = await mintToken({
    privateKey: issuerKey,
    kid: t.node.devIssuer!.kid,
    alg: 'EdDSA',
    issuer: t.node.devIssuer!.issuer,
    audience: t.node.nodeId,
    subject: 'late',
    org: 'org-a',
    roles: ['spaces'],
    lifetimeSeconds: 60,
    now: new Date(Date.now() - 3600_000),
  });
  const late = await ocs(['space', 'ls'], { ...home, OCS_TOKEN: expired });
  refused(late, 3, 'token_expired');
  assert.match(late.stderr, /fresh one/);

  // The node is full.
  refused(
    await ocs(['space', 'reserve', '--cpu', '500', '--memory', '1GiB', '--storage', '1GiB'], home),
    6,
    'capacity_exceeded',
  );

  // An image larger than the space.
  const big = join(dir, 'big.tar');
  writeFileSync(big, randomBytes(20 * MiB));
  refused(await ocs(['image', 'load', big, '--name', 'big'], home), 6, 'budget_exceeded');

  // The node's certificate changed since it was added.
  const nodesFile = join(home.OCS_CONFIG_DIR, 'nodes.json');
  const saved = readFileSync(nodesFile, 'utf8');
  const nodes = JSON.parse(saved) as { nodes: { fingerprint: string }[] };
  nodes.nodes[0]!.fingerprint = '00'.repeat(31).match(/../g)!.join(':') + ':00';
  writeFileSync(nodesFile, JSON.stringify(nodes));
  const changed = await ocs(['space', 'ls'], home);
  assert.equal(changed.code, 7);
  assert.match(changed.stderr, /CERTIFICATE HAS CHANGED/);
  writeFileSync(nodesFile, saved);

  // --json errors are JSON too.
  const j = await ocs(['--json', 'space', 'show', 'sp_aaaaaaaaaaaaaaaaaaaa'], home);
  assert.equal(j.code, 4);
  assert.equal((JSON.parse(j.stdout) as { error: { code: string } }).error.code, 'not_found');

  // Usage errors never reach the node.
  const usage = await ocs(['space', 'reserve', '--cpu', 'lots', '--memory', '1GiB', '--storage', '1GiB'], home);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /not a CPU count/);

  // A reservation repeated under its idempotency key (a script retrying) is the same space.
  const again = ['--json', 'space', 'reserve', '--cpu', '0.1', '--memory', '64MiB', '--storage', '16MiB'];
  const key = ['--idempotency-key', `cli-test-${randomBytes(8).toString('hex')}`];
  const first = json<{ id: string }>(await ocs([...again, ...key], home));
  assert.equal(json<{ id: string }>(await ocs([...again, ...key], home)).id, first.id);
  ok(await ocs(['space', 'destroy', first.id], home));

  ok(await ocs(['space', 'destroy', space.id], home));
});

test('on a terminal, node add shows the fingerprint and asks: no adds nothing, yes pins it', async () => {
  const home = mkdtempSync(join(tmpdir(), 'ocs-cli-tty-'));
  try {
    const asked = /Trust it\? \[y\/N\]/;
    const no = await runOcsOnTerminal(home, token, ['node', 'add', 'dev', t.node.url], 'n\r', asked);
    assert.equal(no.code, 2, no.stdout);
    assert.match(no.stdout, new RegExp(`fingerprint is ${t.node.tls.fingerprint}`));
    assert.match(no.stdout, /not added/);
    assert.doesNotMatch(ok(await runOcs(home, token, ['node', 'ls'])), /dev/);

    const yes = await runOcsOnTerminal(home, token, ['node', 'add', 'dev', t.node.url], 'yes\r', asked);
    assert.equal(yes.code, 0, yes.stdout);
    assert.match(yes.stdout, new RegExp(`pinned ${t.node.tls.fingerprint}`));
    assert.match(
      ok(await runOcs(home, token, ['node', 'ls'])),
      new RegExp(`dev\\s+${t.node.url.replace(/[.]/g, '\\.')}`),
    );
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
