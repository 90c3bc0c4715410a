/**
 * `ocs space restore`'s own checks, made before any node is asked: the file, the lease, that it
 * is an archive (its head) and that it is the owner's. The restore itself runs against a real
 * daemon in e2e/src/cli.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArchiveWriter, concatBytes, generatePrivateKey, type Ed25519PrivateKey } from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';
import { readArchiveHead } from '@ocs/client';

const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));
let dir: string;
let owner: Ed25519PrivateKey;
let stranger: Ed25519PrivateKey;
const ARCHIVED = `sp_${'a'.repeat(20)}`;

/** An archive of a space of `key`'s: its head, one chunk and its tail (unsigned: the node checks that). */
function archiveOf(key: Ed25519PrivateKey): Uint8Array {
  const bytes = 1024 * 1024;
  const w = new ArchiveWriter(nativeHashes);
  const start = w.start({
    format: 1,
    spaceId: ARCHIVED,
    ownerKey: key.publicKey.toBase64url(),
    backend: 'fscrypt',
    node: { fingerprint: 'AB:CD' },
    resources: { cpuMillicores: 100, memoryBytes: 16 * 1024 * 1024, storageBytes: bytes },
    workloads: [],
    placement: { uid: 500_000, workloadUid: 501_000, subordinateIds: null, subnet: null },
    image: { bytes, chunkBytes: 64 * 1024 },
    createdAt: new Date(0).toISOString(),
  });
  const chunk = w.chunk(0, new Uint8Array(64 * 1024).fill(7))!;
  return concatBytes(start, chunk, w.end().frame);
}

/** `ocs args…` with a config directory of its own and no node added: nothing can reach a node. */
function ocs(args: string[], key: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: dir, OCS_CONFIG_DIR: join(dir, 'config'), OCS_KEY: key, OCS_TOKEN: 'x' },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ocs-cli-restore-'));
  owner = generatePrivateKey();
  stranger = generatePrivateKey();
  writeFileSync(join(dir, 'owner'), owner.toOpenSshPrivate('owner'), { mode: 0o600 });
  writeFileSync(join(dir, 'stranger'), stranger.toOpenSshPrivate('stranger'), { mode: 0o600 });
  writeFileSync(join(dir, 'space.ocsa'), archiveOf(owner));
  writeFileSync(join(dir, 'cut.ocsa'), archiveOf(owner).subarray(0, 20));
  writeFileSync(join(dir, 'notes.txt'), 'not an archive at all');
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("the archive's head is read from the start of its file: which space, whose", async () => {
  const head = await readArchiveHead(join(dir, 'space.ocsa'));
  assert.equal(head.spaceId, ARCHIVED);
  assert.equal(head.ownerKey, owner.publicKey.toBase64url());
  await assert.rejects(readArchiveHead(join(dir, 'cut.ocsa')), { code: 'archive_malformed' });
  await assert.rejects(readArchiveHead(join(dir, 'notes.txt')), { code: 'archive_malformed' });
});

test('space restore refuses, before asking a node, what it can tell is wrong', () => {
  const key = join(dir, 'owner');
  const usage = [
    ['space', 'restore'],
    ['space', 'restore', join(dir, 'missing.ocsa')],
    ['space', 'restore', dir],
    ['space', 'restore', join(dir, 'space.ocsa'), '--lease', '1w'],
  ];
  for (const args of usage) {
    const r = ocs(args, key);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  // Not an archive, or a cut one: said with its code and what to do (exit 8, as a node would).
  for (const f of ['notes.txt', 'cut.ocsa']) {
    const r = ocs(['space', 'restore', join(dir, f)], key);
    assert.equal(r.code, 8, r.stderr);
    assert.match(r.stderr, /\(archive_malformed\)\n {2}restore a whole archive/);
  }
  // Another owner's archive: refused with the archived owner's fingerprint, nothing sent.
  const other = ocs(['space', 'restore', join(dir, 'space.ocsa')], join(dir, 'stranger'));
  assert.equal(other.code, 3, other.stderr);
  assert.match(other.stderr, new RegExp(`${owner.publicKey.fingerprint().replace(/[+/]/g, '\\$&')}.*\\(not_owner\\)`));
  // The owner's own archive gets as far as choosing the node (none is added here).
  const mine = ocs(['--json', 'space', 'restore', join(dir, 'space.ocsa')], key);
  assert.equal(mine.code, 2);
  assert.match(mine.stdout, /no node added yet/);
});
