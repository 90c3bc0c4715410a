/** The newc writer produces what the kernel's initramfs unpacker expects. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { S_IFCHR, S_IFDIR, S_IFREG, writeCpio } from '@ocs/host/testing/cpio';

/** Parses a newc archive back (enough to check the writer). */
interface Parsed {
  name: string;
  mode: number;
  data: Buffer;
  rdev: [number, number];
}

function parse(buf: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    assert.equal(buf.toString('ascii', off, off + 6), '070701', `magic at ${off}`);
    const field = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [mode, size, rmaj, rmin, nameLen] = [field(1), field(6), field(9), field(10), field(11)];
    const name = buf.toString('utf8', off + 110, off + 110 + nameLen - 1);
    assert.equal(buf[off + 110 + nameLen - 1], 0, 'name is NUL-terminated');
    const dataAt = align(off + 110 + nameLen);
    if (name === 'TRAILER!!!') {
      assert.equal(align(dataAt), buf.length);
      return out;
    }
    out.push({ name, mode, data: buf.subarray(dataAt, dataAt + size), rdev: [rmaj, rmin] });
    off = align(dataAt + size);
  }
}

test('entries round-trip with 4-byte alignment and a trailer', () => {
  const archive = writeCpio([
    { name: 'bin', mode: S_IFDIR | 0o755 },
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } },
    { name: 'init', mode: S_IFREG | 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
    { name: 'odd', mode: S_IFREG | 0o644, data: Buffer.from('abcde') },
  ]);
  assert.equal(archive.length % 4, 0);
  const entries = parse(archive);
  assert.deepEqual(
    entries.map((e) => [e.name, e.mode, e.data.toString(), e.rdev]),
    [
      ['bin', S_IFDIR | 0o755, '', [0, 0]],
      ['dev/console', S_IFCHR | 0o600, '', [5, 1]],
      ['init', S_IFREG | 0o755, '#!/bin/sh\necho hi\n', [0, 0]],
      ['odd', S_IFREG | 0o644, 'abcde', [0, 0]],
    ],
  );
});
