/**
 * The tar reader and the `docker save` checks, on archives built here (no dockerd needed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { OcsError } from '@ocs/protocol';
import { checkImageArchive } from './image-archive.js';
import { BLOCK, TarFormatError, TarScanner, tarEnd, ustarFile, ustarHeader } from './tar.js';

const file = (name: string, text: string) => ustarFile(name, Buffer.from(text));

/** A PAX extension header (`x`) carrying the given records. */
function pax(records: Record<string, string>): Buffer {
  let body = '';
  for (const [k, v] of Object.entries(records)) {
    const rec = ` ${k}=${v}\n`;
    let len = rec.length + 1;
    while (`${len}${rec}`.length !== len) len++;
    body += `${len}${rec}`;
  }
  const data = Buffer.from(body);
  const h = ustarHeader({ name: 'PaxHeaders/x', type: '0', size: data.length });
  h.write('x', 156, 1, 'latin1');
  fixChecksum(h);
  return Buffer.concat([h, data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)]);
}

function fixChecksum(h: Buffer): void {
  h.write('        ', 148, 8, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
}

function scan(buf: Buffer, chunk = 100): TarScanner {
  const s = new TarScanner({ wantData: () => true });
  for (let i = 0; i < buf.length; i += chunk) s.write(buf.subarray(i, i + chunk));
  s.finish();
  return s;
}

const manifest = (images: unknown[]) => file('manifest.json', JSON.stringify(images));
const oneImage = {
  Config: 'abc.json',
  RepoTags: ['ocs-sp_victim/app:latest'],
  Layers: ['l1/layer.tar'],
  Parent: 'sha256:feed',
};
const saved = (extra: Buffer[] = [], images: unknown[] = [oneImage]) =>
  Buffer.concat([
    ustarHeader({ name: 'l1/', type: '5' }),
    file('l1/layer.tar', 'layer bytes'),
    file('abc.json', '{}'),
    ...extra,
    manifest(images),
    file('repositories', '{"ocs-sp_victim/app":{"latest":"abc"}}'),
    tarEnd(),
  ]);

async function check(buf: Buffer) {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-tar-test-'));
  try {
    return await checkImageArchive(Readable.from([buf]), { tmpDir: dir, maxBytes: 1 << 20 });
  } finally {
    // The spool directory is removed on refusal; on success the caller removes it via cleanup().
    rmSync(dir, { recursive: true, force: true });
  }
}

async function refused(buf: Buffer, code = 'invalid_request') {
  await assert.rejects(check(buf), (e: unknown) => e instanceof OcsError && e.code === code);
}

test('the scanner reads what the writer writes, in any chunking', () => {
  const buf = saved();
  for (const chunk of [1, 100, 512, 4096]) {
    const s = scan(buf, chunk);
    assert.deepEqual(
      s.entries.map((e) => [e.name, e.type, e.size]),
      [
        ['l1', '5', 0],
        ['l1/layer.tar', '0', 11],
        ['abc.json', '0', 2],
        ['manifest.json', '0', JSON.stringify([oneImage]).length],
        ['repositories', '0', 38],
      ],
    );
  }
});

test('PAX path and long names are applied; names are cleaned', () => {
  const s = scan(
    Buffer.concat([pax({ path: `./dir/${'n'.repeat(150)}` }), file('short', 'x'), file('./a/./b', 'y'), tarEnd()]),
  );
  assert.deepEqual(
    s.entries.map((e) => e.name),
    [`dir/${'n'.repeat(150)}`, 'a/b'],
  );
  assert.equal(s.entries[0]?.start, 0);
});

test('the scanner refuses what Go would read differently', () => {
  const bad: [string, Buffer][] = [];
  const corrupt = file('a', 'x');
  corrupt[0] = 0x62; // name changed, checksum not
  bad.push(['checksum', Buffer.concat([corrupt, tarEnd()])]);
  bad.push(['truncated', file('a', 'xyz').subarray(0, 600)]);
  bad.push(['no end marker', file('a', 'x')]);
  const dirWithData = ustarHeader({ name: 'd/', type: '5', size: 512 });
  bad.push(['data on a directory', Buffer.concat([dirWithData, Buffer.alloc(512), tarEnd()])]);
  const v7 = file('a', 'x');
  v7.fill(0, 257, 265);
  fixChecksum(v7);
  bad.push(['v7 header', Buffer.concat([v7, tarEnd()])]);
  const global = pax({ comment: 'x' });
  global.write('g', 156, 1, 'latin1');
  fixChecksum(global);
  bad.push(['global pax', Buffer.concat([global, file('a', 'x'), tarEnd()])]);
  bad.push(['sparse', Buffer.concat([pax({ 'GNU.sparse.major': '1' }), file('a', 'x'), tarEnd()])]);
  bad.push(['escape', Buffer.concat([file('../a', 'x'), tarEnd()])]);
  const fifo = ustarHeader({ name: 'f', type: '0' });
  fifo.write('6', 156, 1, 'latin1');
  fixChecksum(fifo);
  bad.push(['fifo', Buffer.concat([fifo, tarEnd()])]);
  for (const [what, buf] of bad) assert.throws(() => scan(buf), TarFormatError, what);
});

test('a good archive is rewritten: our tag only, no Parent, no repositories or index.json', async () => {
  const checked = await checkImageArchive(Readable.from([saved([file('index.json', '{}')])]), { maxBytes: 1 << 20 });
  try {
    assert.deepEqual(checked.image, { Config: 'abc.json', Layers: ['l1/layer.tar'] });
    const chunks: Buffer[] = [];
    for await (const c of checked.rewritten('ocs-sp_mine/app:latest')) chunks.push(c as Buffer);
    let m: unknown;
    const scanner = new TarScanner({
      wantData: (e) => e.name === 'manifest.json',
      onEntry: (e, d) => (m = d && JSON.parse(d.toString())),
    });
    scanner.write(Buffer.concat(chunks));
    scanner.finish();
    assert.deepEqual(
      scanner.entries.map((e) => e.name),
      ['l1', 'l1/layer.tar', 'abc.json', 'manifest.json'],
    );
    assert.deepEqual(m, [{ Config: 'abc.json', RepoTags: ['ocs-sp_mine/app:latest'], Layers: ['l1/layer.tar'] }]);
  } finally {
    await checked.cleanup();
  }
});

test('archives that are not exactly one well-formed image are refused', async () => {
  await refused(Buffer.from('this is not a tar archive at all, just some bytes'.repeat(20)));
  await refused(Buffer.concat([file('a', 'x'), tarEnd()])); // no manifest
  await refused(saved([], [oneImage, { ...oneImage, Config: 'abc.json' }])); // two images
  await refused(saved([], [])); // none
  await refused(saved([], [{ ...oneImage, Layers: ['missing/layer.tar'] }]));
  await refused(saved([], [{ Config: 42, Layers: [] }]));
  await refused(saved().subarray(0, 2048)); // truncated
  // Written through a symlink: `x` -> `.`, then `x/manifest.json` would land on the root.
  await refused(saved([ustarHeader({ name: 'x', type: '2', linkname: '.' }), file('x/manifest.json', '[]')]));
});

test('a tarball over the size limit is budget_exceeded, and the spool is gone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-tar-test-'));
  try {
    await assert.rejects(
      checkImageArchive(Readable.from([saved()]), { tmpDir: dir, maxBytes: 1000 }),
      (e: unknown) => e instanceof OcsError && e.code === 'budget_exceeded',
    );
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
