import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdRangeWatch, checkIdRanges, daemonIdRanges, idOverlaps, reserveIdRanges, type IdFiles } from './id-ranges.js';

const DEFAULTS = daemonIdRanges({ uidBase: 200_000, uidCount: 50_000, subidBase: 1_000_000_000 });

function host(t: { after(fn: () => void): void }, content: Partial<Record<keyof IdFiles, string>>): IdFiles {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-ids-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const files = {} as IdFiles;
  for (const name of ['passwd', 'group', 'subuid', 'subgid'] as const) {
    files[name] = join(dir, name);
    if (content[name] !== undefined) writeFileSync(files[name], content[name], { mode: 0o644 });
  }
  return files;
}

const STOCK = {
  passwd:
    'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\n',
  group: 'root:x:0:\nnogroup:x:65534:\nalice:x:1000:\n',
};

test("a stock Debian's first account does not collide; its second, third and fourth do (useradd's 65536 steps)", (t) => {
  assert.deepEqual(
    idOverlaps(DEFAULTS, host(t, { ...STOCK, subuid: 'alice:100000:65536\n', subgid: 'alice:100000:65536\n' })),
    [],
  );
  const files = host(t, {
    ...STOCK,
    subuid: 'alice:100000:65536\nbob:165536:65536\ncarol:231072:65536\n# a comment\n\n',
    subgid: 'alice:100000:65536\nbob:165536:65536\n',
  });
  const found = idOverlaps(DEFAULTS, files).map((f) => f.replace(/^.*\/(sub[ug]id)/, '$1'));
  assert.deepEqual(found.sort(), [
    'subgid line 2 (bob:165536:65536) overlaps the space uids (spaces.uidBase, uidCount) 200000-249999',
    'subuid line 2 (bob:165536:65536) overlaps the space uids (spaces.uidBase, uidCount) 200000-249999',
    'subuid line 3 (carol:231072:65536) overlaps the QEMU uids (spaces.uidBase + uidCount) 250000-299999',
    'subuid line 3 (carol:231072:65536) overlaps the space uids (spaces.uidBase, uidCount) 200000-249999',
  ]);
  assert.throws(() => checkIdRanges(DEFAULTS, files), /bob:165536:65536\) overlaps the space uids/);
});

test('an account or group whose id is in a range collides; root and its delegations do not', (t) => {
  const files = host(t, {
    passwd: `${STOCK.passwd}svc:x:250010:250010::/:/usr/sbin/nologin\n`,
    group: `${STOCK.group}odd:x:1000000123:\n`,
    subuid: 'root:200000:100000\n0:1000000000:65536\n',
  });
  const found = idOverlaps(DEFAULTS, files);
  assert.equal(found.length, 2, found.join('\n'));
  assert.match(found[0]!, /passwd line 4 \(svc, uid 250010\) overlaps the QEMU uids/);
  assert.match(found[1]!, /group line 4 \(odd, gid 1000000123\) overlaps the containers' subordinate ids/);
});

test("missing delegation files are no delegations; the ranges are recorded as root's, once, keeping the mode", (t) => {
  const files = host(t, { ...STOCK, subuid: 'alice:100000:65536', subgid: 'alice:100000:65536\n' });
  assert.deepEqual(idOverlaps(DEFAULTS, { ...files, subuid: `${files.subuid}.missing` }), []);
  const added = reserveIdRanges(DEFAULTS, files);
  assert.equal(added.length, 6);
  assert.equal(
    readFileSync(files.subuid, 'utf8'),
    'alice:100000:65536\nroot:200000:50000\nroot:250000:50000\nroot:1000000000:3276800000\n',
  );
  assert.equal(statSync(files.subuid).mode & 0o777, 0o644);
  assert.deepEqual(reserveIdRanges(DEFAULTS, files), [], 'a second start adds nothing');
  // Recorded as root's, they are no overlap for the daemon itself.
  assert.deepEqual(idOverlaps(DEFAULTS, files), []);
});

test('while the daemon runs, a delegation added by hand is noticed once, and its removal too', (t) => {
  const files = host(t, { ...STOCK, subuid: 'alice:100000:65536\n', subgid: '' });
  const watch = new IdRangeWatch(DEFAULTS, files);
  assert.deepEqual(watch.check(), { overlaps: [], changed: false });
  appendFileSync(files.subuid, 'mallory:200000:10\n');
  const found = watch.check();
  assert.equal(found.changed, true);
  assert.match(found.overlaps.join(), /mallory:200000:10\) overlaps the space uids/);
  assert.deepEqual(watch.check().changed, false, 'reported once');
  assert.equal(watch.current.length, 1);
  writeFileSync(files.subuid, 'alice:100000:65536\n');
  assert.deepEqual(watch.check(), { overlaps: [], changed: true });
});
