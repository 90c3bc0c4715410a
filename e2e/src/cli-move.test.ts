/**
 * `ocs space move` as a user drives it, between two real daemons on one machine (each with its
 * own development issuer, so each its own token): a space reserved with `ocs` on node `a` moves
 * to node `b`; `a` answers `space_moved` with its exit code and hint; on `b` the space opens with
 * the wrapped key `ocs` keeps, now under `b`, and holds the file uploaded before the move.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generatePrivateKey, type Tombstone } from '@ocs/protocol';
import { spawnSync } from 'node:child_process';
import { OCS, ok, runOcs } from './ocs-process.js';
import { twoNodes } from './two-nodes.js';

/** A token of `org` from the development issuer of the node whose state is `stateDir`, as `ocs token` mints it. */
function ocsToken(stateDir: string, org: string): string {
  const r = spawnSync(process.execPath, [OCS, 'token', '--state-dir', stateDir, '--org', org], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('ocs space move: reserved on node a, moved to node b, opened there with the key ocs keeps; a says where it went', async () => {
  // The SDK clients of twoNodes are not used here: ocs makes its own key and config.
  const nodes = await twoNodes(['cma', 'cmb'], generatePrivateKey(), 'org-cm', ['spaces', 'storage']);
  const { a, b } = nodes;
  const home = mkdtempSync(join(tmpdir(), 'ocs-cli-move-'));
  try {
    const tokenB = join(home, 'b.token');
    writeFileSync(tokenB, ocsToken(b.config.stateDir, 'org-cm'), { mode: 0o600 });
    const onB = { OCS_TOKEN_FILE: tokenB };
    const ocs = (args: string[], env: Record<string, string> = {}) =>
      runOcs(home, ocsToken(a.config.stateDir, 'org-cm'), args, env);
    const [infoA, infoB] = [await a.client.node.info(), await b.client.node.info()];

    ok(await ocs(['key', 'new']));
    ok(await ocs(['node', 'add', 'a', a.daemon.url, '--fingerprint', infoA.tlsFingerprint]));
    ok(await ocs(['node', 'add', 'b', b.daemon.url, '--fingerprint', infoB.tlsFingerprint]));
    const space = JSON.parse(
      ok(await ocs(['--json', 'space', 'reserve', '--cpu', '0.2', '--memory', '128MiB', '--storage', '64MiB'])),
    ) as { id: string };
    nodes.spaces.add(space.id);
    const marker = join(home, 'marker.txt');
    const content = `before the move ${randomBytes(8).toString('hex')}\n`;
    writeFileSync(marker, content);
    ok(await ocs(['file', 'upload', marker]));

    const moved = JSON.parse(ok(await ocs(['--json', 'space', 'move', '--to', 'b', '--to-token-file', tokenB]))) as {
      tombstone: Tombstone;
    };
    assert.equal(moved.tombstone.spaceId, space.id);
    assert.equal(moved.tombstone.to!.url, b.daemon.url);

    // Node a says where it went: exit 5 (the space's state), its code, and what to do.
    const old = await ocs(['--node', 'a', 'space', 'show', space.id]);
    assert.equal(old.code, 5, old.stderr);
    assert.match(old.stderr, /\(space_moved\)\n {2}the space is on another node now/);

    // On b, the current space now: it opens with the key kept here, and holds the file.
    assert.match(ok(await ocs(['--node', 'b', 'space', 'unlock'], onB)), /active/);
    const files = JSON.parse(ok(await ocs(['--json', '--node', 'b', 'file', 'ls'], onB))) as {
      files: { sha256: string }[];
    };
    assert.deepEqual(
      files.files.map((f) => f.sha256),
      [createHash('sha256').update(content).digest('hex')],
    );
    const stored = join(b.config.storage.root, 'mnt', space.id, 'data', 'space', 'files');
    assert.ok(
      readdirSync(stored).some((f) => readFileSync(join(stored, f), 'utf8') === content),
      "the file's bytes are on b",
    );
    ok(await ocs(['--node', 'b', 'space', 'destroy', space.id], onB));
  } finally {
    await nodes.close();
    rmSync(home, { recursive: true, force: true });
  }
});
