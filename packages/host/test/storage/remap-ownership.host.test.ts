/**
 * The owner walk of a restored space against the real filesystem (root: it chowns; host tier).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { remapOwnership } from '#src/remap-ownership.js';

test('every owner in an old range moves to the new one; links are not followed; set-id bits stay', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ocs-remap-'));
  const outside = mkdtempSync(join(tmpdir(), 'ocs-remap-outside-'));
  try {
    mkdirSync(join(root, 'home'));
    chownSync(join(root, 'home'), 700_001, 700_001);
    writeFileSync(join(root, 'home', 'state.db'), 'x');
    chownSync(join(root, 'home', 'state.db'), 700_001, 700_001);
    writeFileSync(join(root, 'home', 'tool'), 'x');
    chownSync(join(root, 'home', 'tool'), 2_000_000, 2_000_000 + 5);
    chmodSync(join(root, 'home', 'tool'), 0o4755);
    writeFileSync(join(root, 'node-owned'), 'x');
    // A link to a file outside: the link moves, its target does not.
    writeFileSync(join(outside, 'target'), 'x');
    symlinkSync(join(outside, 'target'), join(root, 'home', 'link'));
    chownSync(join(outside, 'target'), 700_001, 700_001);
    const shifts = [
      { from: 700_001, to: 700_009, count: 1 },
      { from: 2_000_000, to: 3_000_000, count: 65_536 },
    ];
    const first = await remapOwnership(root, shifts);
    assert.equal(lstatSync(join(root, 'home')).uid, 700_009);
    assert.equal(lstatSync(join(root, 'home', 'state.db')).gid, 700_009);
    const tool = lstatSync(join(root, 'home', 'tool'));
    assert.deepEqual([tool.uid, tool.gid, tool.mode & 0o7777], [3_000_000, 3_000_005, 0o4755]);
    assert.equal(lstatSync(join(root, 'node-owned')).uid, 0);
    assert.equal(lstatSync(join(outside, 'target')).uid, 700_001, 'a link is never followed');
    assert.equal(first.changed, 3);
    // Again (a crash after the walk, before it was recorded): nothing moves twice.
    const second = await remapOwnership(root, shifts);
    assert.equal(second.changed, 0);
    assert.equal(lstatSync(join(root, 'home', 'tool')).uid, 3_000_000);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});
