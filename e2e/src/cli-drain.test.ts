/**
 * Retiring a node as its farmer and owner drive it: `ocs space delegate` names node `b` for one
 * space, another has no delegation; the farmer runs `ocs-node drain --wait` on node `a` (with a
 * farmer token from its development issuer), and sees the same with `ocs node drain --status`.
 * The delegated space opens on `b` with the wrapped key `ocs` kept under `a`; the other, exported
 * by `a`, is restored on `b` by `ocs space restore`, which checks it, signs it with the owner's
 * key and says which node had signed it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { generatePrivateKey, parsePublicKey } from '@ocs/protocol';
import { OCS, ok, runOcs } from './ocs-process.js';
import { twoNodes, type Node } from './two-nodes.js';

const OCS_NODE = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));

function token(cli: string, stateDir: string, args: string[]): string {
  const r = spawnSync(process.execPath, [cli, 'token', '--state-dir', stateDir, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

function holds(n: Node, id: string, content: string): boolean {
  const files = join(n.config.storage.root, 'mnt', id, 'data', 'space', 'files');
  return readdirSync(files).some((f) => readFileSync(join(files, f), 'utf8') === content);
}

test('ocs space delegate, ocs-node drain --wait, ocs space restore of the export: both spaces open on b', async () => {
  const nodes = await twoNodes(['cda', 'cdb'], generatePrivateKey(), 'org-cd', ['spaces', 'storage'], {
    peersOfB: (a) => [a],
  });
  const { a, b } = nodes;
  const home = mkdtempSync(join(tmpdir(), 'ocs-cli-drain-'));
  try {
    const tokenB = join(home, 'b.token');
    writeFileSync(tokenB, token(OCS, b.config.stateDir, ['--org', 'org-cd']), { mode: 0o600 });
    const onB = { OCS_TOKEN_FILE: tokenB };
    const ocs = (args: string[], env: Record<string, string> = {}) =>
      runOcs(home, token(OCS, a.config.stateDir, ['--org', 'org-cd']), args, env);
    const [infoA, infoB] = [await a.client.node.info(), await b.client.node.info()];
    ok(await ocs(['key', 'new']));
    ok(await ocs(['node', 'add', 'a', a.daemon.url, '--fingerprint', infoA.tlsFingerprint]));
    ok(await ocs(['node', 'add', 'b', b.daemon.url, '--fingerprint', infoB.tlsFingerprint]));

    const reserve = async () => {
      const s = JSON.parse(
        ok(await ocs(['--json', 'space', 'reserve', '--cpu', '0.1', '--memory', '64MiB', '--storage', '64MiB'])),
      ) as { id: string };
      nodes.spaces.add(s.id);
      const content = `before the drain ${randomBytes(8).toString('hex')}\n`;
      const file = join(home, `${s.id}.txt`);
      writeFileSync(file, content);
      ok(await ocs(['file', 'upload', file, '--space', s.id]));
      return { id: s.id, content };
    };
    const delegated = await reserve();
    const plain = await reserve();
    const shown = ok(await ocs(['space', 'delegate', delegated.id, '--to', 'b', '--for', '1d']));
    assert.match(shown, /may move without you until .*\n {2}to nodes: b/);
    const view = JSON.parse(ok(await ocs(['--json', 'space', 'show', delegated.id]))) as {
      delegation?: { nodes: { url: string }[] };
    };
    assert.deepEqual(
      view.delegation?.nodes.map((n) => n.url),
      [b.daemon.url],
    );

    // The farmer, on node a: a token from its issuer, the daemon pinned by its own certificate.
    const farmer = token(OCS_NODE, a.config.stateDir, ['--role', 'farmer']);
    const drain = spawnSync(
      process.execPath,
      [OCS_NODE, 'drain', '--state-dir', a.config.stateDir, '--url', a.daemon.url, '--grace', '0', '--wait'],
      { encoding: 'utf8', env: { ...process.env, OCS_TOKEN: farmer }, timeout: 120_000 },
    );
    assert.equal(drain.status, 0, drain.stderr + drain.stdout);
    assert.match(drain.stdout, /drain: drained/);
    assert.match(drain.stdout, new RegExp(`${delegated.id} {2}moved → ${b.daemon.url.replace(/[.]/g, '\\.')}`));
    assert.match(drain.stdout, new RegExp(`${plain.id} {2}exported → ${plain.id}\\.ocsa`));
    // A farmer elsewhere sees the same with `ocs node drain` and a farmer's token; an owner's
    // token (no farmer role) cannot cancel it.
    const farmerFile = join(home, 'farmer.token');
    writeFileSync(farmerFile, farmer, { mode: 0o600 });
    const remote = ok(await ocs(['node', 'drain', 'a', '--status'], { OCS_TOKEN_FILE: farmerFile }));
    assert.match(remote, /drain: drained/);
    assert.match(remote, new RegExp(`${delegated.id} {2}moved → `));
    const refused = await ocs(['node', 'drain', 'a', '--cancel']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /\(role_missing\)/);

    // Moved: it opens on b with the key ocs kept under a.
    assert.match(ok(await ocs(['--node', 'b', 'space', 'unlock', delegated.id], onB)), /active/);
    assert.ok(holds(b, delegated.id, delegated.content), 'the delegated space holds its file on b');

    // Exported: a tells where it went; its owner restores the file on b.
    const gone = await ocs(['--node', 'a', 'space', 'show', plain.id]);
    assert.equal(gone.code, 5, gone.stderr);
    assert.match(gone.stderr, /\(space_moved\)/);
    const archive = join(a.config.stateDir, 'exports', `${plain.id}.ocsa`);
    const restored = await ocs(['--json', '--node', 'b', 'space', 'restore', archive], onB);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(
      restored.stderr,
      new RegExp(
        `checked \\(every chunk\\) and signed with your key; it was signed by node ${parsePublicKey(infoA.identityKey).fingerprint().replace(/[+/]/g, '.')}`,
      ),
    );
    const fork = (JSON.parse(restored.stdout) as { space: { id: string } }).space.id;
    nodes.spaces.add(fork);
    assert.match(ok(await ocs(['--node', 'b', 'space', 'unlock', fork], onB)), /active/);
    assert.ok(holds(b, fork, plain.content), 'the exported space, restored, holds its file on b');
  } finally {
    await nodes.close();
    rmSync(home, { recursive: true, force: true });
  }
});
