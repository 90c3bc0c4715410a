import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readlinkSync, readSync, statfsSync } from 'node:fs';
import { parseMountinfo } from './loop.js';
import { withKeyFd } from './keyfd.js';

test('mountinfo: fields after the optional ones, octal escapes undone', () => {
  const text = [
    '36 35 98:0 / /mnt/with\\040space rw,noatime master:1 shared:2 - ext4 /dev/loop7 rw',
    '37 35 98:1 / /var/lib/ocs/mnt/sp_x rw - ext4 /dev/loop8 rw,errors=remount-ro',
    'garbage',
    '',
  ].join('\n');
  assert.deepEqual(parseMountinfo(text), [
    { mountpoint: '/mnt/with space', fstype: 'ext4', source: '/dev/loop7' },
    { mountpoint: '/var/lib/ocs/mnt/sp_x', fstype: 'ext4', source: '/dev/loop8' },
  ]);
});

test('key hand-over: an unnamed tmpfs file holding the key, zeroed before it is closed', async () => {
  const key = new Uint8Array(randomBytes(32));
  let reopened = -1;
  await withKeyFd(key, async (fd) => {
    const target = readlinkSync(`/proc/self/fd/${fd}`);
    assert.match(target, /^\/dev\/shm\/#\d+ \(deleted\)$/, 'no name anywhere in the filesystem');
    reopened = openSync(`/proc/self/fd/${fd}`, 'r');
    const seen = Buffer.alloc(32);
    readSync(reopened, seen, 0, 32, 0);
    assert.deepEqual(new Uint8Array(seen), key);
  });
  try {
    const after = Buffer.alloc(32);
    readSync(reopened, after, 0, 32, 0);
    assert.deepEqual(after, Buffer.alloc(32), 'the key bytes are overwritten once the command is done');
  } finally {
    closeSync(reopened);
  }
});

test('key hand-over refuses a directory that is not a tmpfs', async (t) => {
  const dir = process.cwd();
  if (statfsSync(dir).type === 0x01021994) return t.skip(`${dir} is a tmpfs here`);
  await assert.rejects(
    withKeyFd(new Uint8Array(32), async () => undefined, dir),
    /not a tmpfs/,
  );
});
