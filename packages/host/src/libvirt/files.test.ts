/** File checks, disk format detection, exact opens and console tails, on a scratch directory. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isOcsError } from '@ocs/protocol';
import { readTail } from './console.js';
import { checkConsoleTarget, checkRegularFile, diskFormat } from './paths.js';
import { openExactFile } from './safe-open.js';

async function scratch(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ocs-libvirt-files-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const rejectsWith = (p: Promise<unknown>, code: string, re?: RegExp) =>
  assert.rejects(p, (e: unknown) => isOcsError(e) && e.code === code && (!re || re.test(e.message)));

/** A qcow2 header: magic, version, backing offset, crypt method, incompatible features. */
function qcow2(opts: { version?: number; backing?: bigint; crypt?: number; incompatible?: bigint } = {}): Buffer {
  const b = Buffer.alloc(512);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(opts.version ?? 3, 4);
  b.writeBigUInt64BE(opts.backing ?? 0n, 8);
  b.writeUInt32BE(opts.crypt ?? 0, 32);
  b.writeBigUInt64BE(opts.incompatible ?? 0n, 72);
  return b;
}

test('disk formats come from the header; images that reach other files are refused', async (t) => {
  const dir = await scratch(t);
  const write = async (name: string, data: Buffer) => {
    await writeFile(join(dir, name), data);
    return join(dir, name);
  };
  assert.equal(await diskFormat('d', await write('raw', Buffer.alloc(4096))), 'raw');
  assert.equal(await diskFormat('d', await write('empty', Buffer.alloc(0))), 'raw');
  assert.equal(await diskFormat('d', await write('q3', qcow2())), 'qcow2');
  assert.equal(await diskFormat('d', await write('q2', qcow2({ version: 2, incompatible: 4n }))), 'qcow2');
  assert.equal(await diskFormat('d', await write('dirty', qcow2({ incompatible: 1n }))), 'qcow2');
  await rejectsWith(
    diskFormat('d', await write('backing', qcow2({ backing: 512n }))),
    'invalid_request',
    /backing file/,
  );
  await rejectsWith(
    diskFormat('d', await write('datafile', qcow2({ incompatible: 4n }))),
    'invalid_request',
    /external data file/,
  );
  await rejectsWith(diskFormat('d', await write('crypt', qcow2({ crypt: 1 }))), 'invalid_request', /encrypted/);
  await rejectsWith(diskFormat('d', await write('v9', qcow2({ version: 9 }))), 'invalid_request');
  await symlink(join(dir, 'raw'), join(dir, 'link'));
  await rejectsWith(diskFormat('d', join(dir, 'link')), 'invalid_request', /symbolic link/);
});

test('regular files and console targets', async (t) => {
  const dir = await scratch(t);
  await writeFile(join(dir, 'f'), 'x');
  await checkRegularFile('f', join(dir, 'f'));
  await mkdir(join(dir, 'sub'));
  await rejectsWith(checkRegularFile('f', join(dir, 'sub')), 'invalid_request', /regular file/);
  await rejectsWith(checkRegularFile('f', join(dir, 'nope')), 'invalid_request', /does not exist/);

  await checkConsoleTarget(join(dir, 'new.log')); // may not exist yet
  await checkConsoleTarget(join(dir, 'f'));
  await rejectsWith(checkConsoleTarget(join(dir, 'nodir', 'c.log')), 'invalid_request', /does not exist/);
  await symlink(dir, join(dir, 'dirlink'));
  await rejectsWith(checkConsoleTarget(join(dir, 'dirlink', 'c.log')), 'invalid_request', /symbolic link/);
  await link(join(dir, 'f'), join(dir, 'hard.log'));
  await rejectsWith(checkConsoleTarget(join(dir, 'hard.log')), 'invalid_request', /single link/);
  await symlink('/etc/hostname', join(dir, 'sym.log'));
  await rejectsWith(checkConsoleTarget(join(dir, 'sym.log')), 'invalid_request');
});

test('openExactFile refuses links at the end or anywhere above, and missing files are undefined', async (t) => {
  const dir = await scratch(t);
  await mkdir(join(dir, 'real'));
  await writeFile(join(dir, 'real', 'f'), 'x');
  const fh = await openExactFile('f', join(dir, 'real', 'f'));
  assert.ok(fh);
  await fh.close();
  assert.equal(await openExactFile('f', join(dir, 'real', 'missing')), undefined);
  await symlink(join(dir, 'real', 'f'), join(dir, 'real', 'l'));
  await rejectsWith(openExactFile('f', join(dir, 'real', 'l')), 'conflict', /symbolic link/);
  // The directory is renamed and a link put in its place: the open lands elsewhere and is refused.
  await rename(join(dir, 'real'), join(dir, 'moved'));
  await symlink(join(dir, 'moved'), join(dir, 'real'));
  await rejectsWith(openExactFile('f', join(dir, 'real', 'f')), 'conflict', /recorded path/);
  await rejectsWith(openExactFile('f', join(dir, 'moved')), 'conflict');
});

test('readTail returns the end of the log and says when it cut', async (t) => {
  const dir = await scratch(t);
  const log = join(dir, 'c.log');
  assert.deepEqual(await readTail(log, 10), { text: '', truncated: false });
  await writeFile(log, 'line one\nline two\n');
  assert.deepEqual(await readTail(log, 1000), { text: 'line one\nline two\n', truncated: false });
  assert.deepEqual(await readTail(log, 9), { text: 'line two\n', truncated: true });
  await rejectsWith(readTail(log, 0), 'invalid_request');
  await rejectsWith(readTail(log, 2 * 1024 * 1024), 'invalid_request');
});
