/**
 * The behaviour every storage backend must show, checked against the real kernel. A backend's test
 * file calls {@link storageConformance} with a factory for a driver on scratch storage of its own.
 * Not exported from the package: it imports node:test.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isOcsError, isOutOfSpace, type ErrorCode } from '@ocs/protocol';
import { run } from '#src/exec.js';
import {
  readsImages,
  receivesImages,
  type ImageReceiver,
  type StorageDriver,
  type StorageImage,
} from '#src/storage/types.js';

/** A driver on scratch storage, plus the backend-specific views the suite needs. */
export interface ConformanceSubject {
  driver: StorageDriver;
  /** The storage root the driver was given, not made yet (the suite checks what the driver makes of it): spaces appear at <root>/mnt/<id>. */
  root: string;
  /** Files or block devices holding the raw bytes of space `id` (fscrypt: its image; zfs: the pool's vdevs). */
  rawPaths(id: string): Promise<string[]>;
  /** Bytes the space occupies on the host. */
  hostBytes(id: string): Promise<number>;
  /**
   * How far past its size a full space may occupy, by the filesystem's own accounting: 0 for an
   * image file. ZFS checks a quota against what is already committed, so writes in flight in the
   * open transaction group can run past it a little (100 KiB past 64 MiB, seen in the guest).
   */
  overshootBytes?: number;
  /** Kernel and filesystem objects still present for `id` (loop devices, mounts, datasets, files); [] when gone. */
  leftovers(id: string): Promise<string[]>;
  /** A second driver on the same storage, as after a daemon restart. */
  reopen(): StorageDriver;
  /** Removes what the subject made, exactly (its own scratch storage, nothing found by pattern). */
  cleanup(): Promise<void>;
}

const MiB = 1024 * 1024;

function rejectsWith(code: ErrorCode) {
  return (e: unknown) => {
    assert.ok(isOcsError(e), `expected OcsError(${code}), got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  };
}

/** Writes `data` to `path` and makes sure it reached the filesystem (not only the page cache). */
function writeSynced(path: string, data: Uint8Array): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Streams `path` looking for `needle`, so a large device never has to fit in memory. */
export function rawContains(path: string, needle: Uint8Array): boolean {
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(8 * MiB);
    let carry = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return false;
      const hay = Buffer.concat([carry, chunk.subarray(0, n)]);
      if (hay.includes(Buffer.from(needle.buffer, needle.byteOffset, needle.byteLength))) return true;
      carry = hay.subarray(Math.max(0, hay.length - needle.length + 1));
    }
  } finally {
    closeSync(fd);
  }
}

/** Flushes dirty pages everywhere, then drops clean ones so raw reads come from the disk (the drop needs root; best effort). */
async function syncAndDropCaches(): Promise<void> {
  await run('sync', []);
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch {
    /* not permitted: the synced page cache holds what the disk holds */
  }
}

/** Permission bits of each path, as `{ path: '0700' }`, so a failure names every path that is off. */
function modesOf(paths: string[]): Record<string, string> {
  return Object.fromEntries(paths.map((p) => [p, (statSync(p).mode & 0o7777).toString(8).padStart(4, '0')]));
}

/**
 * Copies an image into a receiver, chunk by chunk and in order (what an archive does, without
 * the archive), letting `alter` change a chunk on the way; says whether any chunk held `needles`.
 */
async function copyImage(
  from: StorageImage,
  to: ImageReceiver,
  needles: Buffer[],
  alter?: (chunk: Uint8Array, at: number) => void,
): Promise<{ bytes: number; found: boolean }> {
  let at = 0;
  let found = false;
  for (;;) {
    const chunk = new Uint8Array(Math.min(4 * MiB, from.bytes - at));
    let n = 0;
    while (n < chunk.length) {
      const k = await from.read(chunk.subarray(n), at + n);
      if (k === 0) break;
      n += k;
    }
    if (n === 0) break;
    const piece = chunk.subarray(0, n);
    found ||= needles.some((m) => Buffer.from(piece).includes(m));
    alter?.(piece, at);
    await to.write(piece, at);
    at += n;
    if (at >= from.bytes) break;
  }
  return { bytes: at, found };
}

function marker(): Buffer {
  return Buffer.from(`OCS-MARKER-${randomBytes(16).toString('hex')}-END`);
}

/** 64 KiB of repeated marker, so any plaintext copy on disk would surely contain one whole marker. */
function markerFile(m: Buffer): Buffer {
  return Buffer.concat(Array.from({ length: Math.ceil((64 * 1024) / m.length) }, () => m));
}

/**
 * Registers the shared storage suite under `name`. `make` is called once; the suite destroys every
 * space it creates, then calls `cleanup`.
 */
export function storageConformance(
  name: string,
  make: () => Promise<ConformanceSubject>,
  opts: { sizeBytes?: number } = {},
): void {
  const size = opts.sizeBytes ?? 32 * MiB;
  void describe(`storage conformance: ${name}`, () => {
    let s: ConformanceSubject;
    let d: StorageDriver;
    const made = new Set<string>();
    const id = `ct-${randomBytes(4).toString('hex')}`;
    const other = `ct-${randomBytes(4).toString('hex')}`;
    const key = new Uint8Array(randomBytes(32));
    const key2 = new Uint8Array(randomBytes(32));
    const wrong = new Uint8Array(randomBytes(32));
    const volKey = new Uint8Array(randomBytes(32));
    const spaceMarker = marker();
    const volMarker = marker();
    let scratch: string;

    const rawHas = async (sid: string, m: Buffer) => {
      await syncAndDropCaches();
      for (const p of await s.rawPaths(sid)) if (rawContains(p, m)) return true;
      return false;
    };

    before(async () => {
      s = await make();
      d = s.driver;
      scratch = mkdtempSync(join(tmpdir(), 'ocs-conformance-'));
    });

    after(async () => {
      for (const sid of made) await d.destroy(sid).catch(() => undefined);
      await s?.cleanup();
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    });

    void test('bad ids, sizes and keys are refused before anything touches the host', async () => {
      for (const bad of ['', 'A', '-rf', '../x', 'a/b', 'a b', 'a:b', 'x'.repeat(65), '.hidden', 'é']) {
        await assert.rejects(d.create(bad, size, key), rejectsWith('invalid_request'), `id ${JSON.stringify(bad)}`);
        await assert.rejects(d.info(bad), rejectsWith('invalid_request'));
        await assert.rejects(d.destroy(bad), rejectsWith('invalid_request'));
      }
      for (const bad of [0, -1, 1.5, Number.NaN, 1024])
        await assert.rejects(d.create(id, bad, key), rejectsWith('invalid_request'), `size ${bad}`);
      await assert.rejects(d.create(id, size, new Uint8Array(31)), rejectsWith('invalid_request'));
      await assert.rejects(d.info(id), rejectsWith('not_found'));
      await assert.rejects(d.lock(id), rejectsWith('not_found'));
      await assert.rejects(d.unlock(id, key), rejectsWith('not_found'));
      assert.equal((await d.list()).includes(id), false);
    });

    void test('create leaves the space unlocked; a marker written and synced reads back', async (t) => {
      const started = Date.now();
      made.add(id);
      const info = await d.create(id, size, key);
      t.diagnostic(`create took ${Date.now() - started} ms`);
      assert.equal(info.id, id);
      assert.equal(info.unlocked, true);
      assert.ok(info.sizeBytes <= size && info.sizeBytes > size * 0.9, `sizeBytes ${info.sizeBytes}`);
      assert.ok(info.usedBytes >= 0 && info.usedBytes < info.sizeBytes);
      writeSynced(join(info.mountpoint, 'marker.bin'), markerFile(spaceMarker));
      assert.deepEqual(readFileSync(join(info.mountpoint, 'marker.bin')), markerFile(spaceMarker));
      assert.ok((await d.list()).includes(id));
      await assert.rejects(d.create(id, size, key), rejectsWith('conflict'));
      await assert.rejects(d.unlock(id, key), rejectsWith('space_unlocked'));
    });

    void test("modes: the node's layout holds (root and mnt 0711, the space 0755 open and 0000 locked, data 0700, volumes 0711, a volume 0700 open or locked)", async () => {
      const fs = join(s.root, 'mnt', id);
      const info = await d.info(id);
      assert.equal(info.mountpoint, join(fs, 'data'));
      const { path } = await d.createVolume(id, 'modes', MiB, volKey);
      assert.equal(path, join(fs, 'volumes', 'modes'));
      const open = {
        [s.root]: '0711',
        [join(s.root, 'mnt')]: '0711',
        [fs]: '0755',
        [info.mountpoint]: '0700',
        [join(fs, 'volumes')]: '0711',
        [path]: '0700',
      };
      assert.deepEqual(modesOf(Object.keys(open)), open);
      // Mode 0 where the space appears: nothing unprivileged can put plaintext there while it is locked.
      await d.lock(id);
      assert.deepEqual(modesOf([fs]), { [fs]: '0000' });
      assert.equal(existsSync(info.mountpoint), false);
      await d.unlock(id, key);
      assert.deepEqual(modesOf([path]), { [path]: '0700' }, 'a locked volume');
      await d.unlockVolume(id, 'modes', volKey);
      assert.deepEqual(modesOf(Object.keys(open)), open, 'the same again after unlock');
      await d.destroyVolume(id, 'modes');
    });

    void test('info reports usage that grows with data', async () => {
      const before = (await d.info(id)).usedBytes;
      const mp = (await d.info(id)).mountpoint;
      writeSynced(join(mp, 'usage.bin'), randomBytes(4 * MiB));
      const grown = (await d.info(id)).usedBytes;
      assert.ok(grown >= before + 3 * MiB, `used ${before} → ${grown}`);
      rmSync(join(mp, 'usage.bin'));
    });

    void test('while unlocked, the raw storage holds no plaintext copy of the marker (after sync and dropping caches)', async () => {
      assert.equal(await rawHas(id, spaceMarker), false);
    });

    void test('writing past sizeBytes fails with ENOSPC; the host is unaffected', async (t) => {
      const mp = (await d.info(id)).mountpoint;
      const fill = join(mp, 'fill.bin');
      // Whatever this test finds, the space is not left full for the tests after it.
      t.after(() => rmSync(fill, { force: true }));
      const fd = openSync(fill, 'w');
      let written = 0;
      let error: NodeJS.ErrnoException | undefined;
      try {
        const chunk = randomBytes(MiB);
        while (written <= size * 2) {
          try {
            written += writeSync(fd, chunk);
            if (written % (8 * MiB) === 0) fsyncSync(fd);
          } catch (e) {
            error = e as NodeJS.ErrnoException;
            break;
          }
        }
        if (!error) {
          try {
            fsyncSync(fd);
          } catch (e) {
            error = e as NodeJS.ErrnoException;
          }
        }
      } finally {
        closeSync(fd);
      }
      assert.ok(error, `wrote ${written} bytes into a ${size}-byte space without an error`);
      // ENOSPC from a full image, EDQUOT from a dataset at its quota (Node 20 names it UNKNOWN).
      assert.ok(isOutOfSpace(error), `got ${error.code} (errno ${error.errno})`);
      assert.ok(written <= size, `wrote ${written} bytes into a ${size}-byte space`);
      const occupied = await s.hostBytes(id);
      const allowed = size + (s.overshootBytes ?? 0);
      assert.ok(occupied <= allowed, `the space occupies ${occupied} bytes on the host, more than ${allowed}`);
      writeFileSync(join(scratch, 'host-still-writable'), randomBytes(MiB));
      // The marker survived the full disk.
      assert.deepEqual(readFileSync(join(mp, 'marker.bin')), markerFile(spaceMarker));
    });

    void test('lock: the marker is unreadable, and nowhere in the raw storage', async (t) => {
      const mp = (await d.info(id)).mountpoint;
      const started = Date.now();
      await d.lock(id);
      t.diagnostic(`lock took ${Date.now() - started} ms`);
      assert.equal((await d.info(id)).unlocked, false);
      assert.throws(
        () => readFileSync(join(mp, 'marker.bin')),
        (e: NodeJS.ErrnoException) => ['ENOKEY', 'ENOENT', 'EACCES', 'EPERM'].includes(e.code ?? ''),
      );
      assert.equal(await rawHas(id, spaceMarker), false);
      await d.lock(id); // idempotent
      assert.ok((await d.list()).includes(id), 'a locked space is still listed');
    });

    void test('unlock with a wrong key is refused with unwrap_failed and the space stays locked', async () => {
      await assert.rejects(d.unlock(id, wrong), rejectsWith('unwrap_failed'));
      assert.equal((await d.info(id)).unlocked, false);
    });

    void test('unlock with the right key brings the marker back', async (t) => {
      const started = Date.now();
      await d.unlock(id, key);
      t.diagnostic(`unlock took ${Date.now() - started} ms`);
      const info = await d.info(id);
      assert.equal(info.unlocked, true);
      assert.deepEqual(readFileSync(join(info.mountpoint, 'marker.bin')), markerFile(spaceMarker));
    });

    void test('a new driver instance (daemon restart) finds the space and its state', async () => {
      const fresh = s.reopen();
      assert.ok((await fresh.list()).includes(id));
      const info = await fresh.info(id);
      assert.equal(info.unlocked, true);
      await fresh.lock(id);
      assert.equal((await d.info(id)).unlocked, false);
      await fresh.unlock(id, key);
      assert.deepEqual(readFileSync(join(info.mountpoint, 'marker.bin')), markerFile(spaceMarker));
    });

    void test('rotateKey: the old key no longer unlocks, the new one does; data is kept', async (t) => {
      await assert.rejects(d.rotateKey(id, wrong, key2), rejectsWith('unwrap_failed'));
      const started = Date.now();
      await d.rotateKey(id, key, key2);
      t.diagnostic(`rotateKey (unlocked) took ${Date.now() - started} ms`);
      assert.equal((await d.info(id)).unlocked, true, 'rotation keeps an unlocked space unlocked');
      await d.lock(id);
      await assert.rejects(d.unlock(id, key), rejectsWith('unwrap_failed'));
      await d.unlock(id, key2);
      const mp = (await d.info(id)).mountpoint;
      assert.deepEqual(readFileSync(join(mp, 'marker.bin')), markerFile(spaceMarker));

      // And while locked: it stays locked, and only the newest key opens it.
      await d.lock(id);
      await d.rotateKey(id, key2, key);
      assert.equal((await d.info(id)).unlocked, false, 'rotation keeps a locked space locked');
      await assert.rejects(d.unlock(id, key2), rejectsWith('unwrap_failed'));
      await d.unlock(id, key);
      assert.deepEqual(readFileSync(join(mp, 'marker.bin')), markerFile(spaceMarker));
    });

    void test('one space key does not open another space', async () => {
      made.add(other);
      await d.create(other, size, key2);
      await d.lock(other);
      await assert.rejects(d.unlock(other, key), rejectsWith('unwrap_failed'));
      await d.unlock(other, key2);
      await d.destroy(other);
      made.delete(other);
    });

    void test('volumes: own key, locked with the space, marker absent from the raw storage', async () => {
      const vsize = 4 * MiB;
      await assert.rejects(d.createVolume(id, '../v', vsize, volKey), rejectsWith('invalid_request'));
      await assert.rejects(d.unlockVolume(id, 'nope', volKey), rejectsWith('not_found'));
      const { path } = await d.createVolume(id, 'v1', vsize, volKey);
      await assert.rejects(d.createVolume(id, 'v1', vsize, volKey), rejectsWith('conflict'));
      await assert.rejects(d.createVolume(id, 'huge', size * 2, volKey), rejectsWith('budget_exceeded'));
      writeSynced(join(path, 'marker.bin'), markerFile(volMarker));
      assert.equal(await rawHas(id, volMarker), false, 'volume plaintext on the raw storage while unlocked');
      await assert.rejects(d.unlockVolume(id, 'v1', volKey), rejectsWith('conflict'));

      // Locking the space locks its volumes; unlocking the space does not unlock them.
      await d.lock(id);
      assert.throws(() => readFileSync(join(path, 'marker.bin')));
      assert.equal(await rawHas(id, volMarker), false);
      await assert.rejects(d.createVolume(id, 'v2', vsize, volKey), rejectsWith('space_locked'));
      await assert.rejects(d.unlockVolume(id, 'v1', volKey), rejectsWith('space_locked'));
      await d.unlock(id, key);
      assert.throws(() => readFileSync(join(path, 'marker.bin')), 'the volume stays locked until its own unlock');
      const mp = (await d.info(id)).mountpoint;
      assert.deepEqual(readFileSync(join(mp, 'marker.bin')), markerFile(spaceMarker), 'the space is open');
      await assert.rejects(
        d.unlockVolume(id, 'v1', key),
        rejectsWith('unwrap_failed'),
        'the space key is not the volume key',
      );
      await d.unlockVolume(id, 'v1', volKey);
      assert.deepEqual(readFileSync(join(path, 'marker.bin')), markerFile(volMarker));

      await d.destroyVolume(id, 'v1');
      await d.destroyVolume(id, 'v1'); // idempotent
      assert.equal(existsSync(path), false);
      await assert.rejects(d.unlockVolume(id, 'v1', volKey), rejectsWith('not_found'));
    });

    void test('an image of a locked space holds no plaintext; received as a new space it opens with the same keys, its volume under a new id', async (t) => {
      if (!readsImages(d) || !receivesImages(d)) return t.skip(`the ${name} driver neither reads nor receives images`);
      const copy = `ct-${randomBytes(4).toString('hex')}`;
      const bad = `ct-${randomBytes(4).toString('hex')}`;
      const { path } = await d.createVolume(id, 'img', MiB, volKey);
      writeSynced(join(path, 'marker.bin'), markerFile(volMarker));
      await assert.rejects(d.openImage(id), rejectsWith('space_unlocked'), 'an open space has no image');
      await d.lock(id);

      const started = Date.now();
      const image = await d.openImage(id);
      made.add(copy);
      let copied: { bytes: number; found: boolean };
      try {
        const receiver = await d.receiveImage(copy, image.bytes, size);
        copied = await copyImage(image, receiver, [spaceMarker, volMarker]);
        await receiver.commit();
      } finally {
        await image.close();
      }
      t.diagnostic(`image of ${copied.bytes} bytes copied and checked in ${Date.now() - started} ms`);
      assert.equal(copied.found, false, 'a marker is in the image');
      assert.ok((await d.list()).includes(copy));
      assert.equal((await d.info(copy)).unlocked, false, 'a received space is locked');
      await assert.rejects(d.unlock(copy, wrong), rejectsWith('unwrap_failed'));
      await d.unlock(copy, key);
      const info = await d.info(copy);
      assert.deepEqual(readFileSync(join(info.mountpoint, 'marker.bin')), markerFile(spaceMarker));
      await d.renameVolume(copy, 'img', 'img2');
      await d.renameVolume(copy, 'img', 'img2'); // idempotent
      await d.unlockVolume(copy, 'img2', volKey);
      assert.deepEqual(readFileSync(join(d.volumePath(copy, 'img2'), 'marker.bin')), markerFile(volMarker));
      assert.equal(existsSync(d.volumePath(copy, 'img')), false, 'the old volume path is gone');
      await d.destroy(copy);
      made.delete(copy);
      assert.deepEqual(await s.leftovers(copy), []);

      // Altered on the way (its start: ext4's superblock and group descriptors, a stream's
      // first records): refused with the archive's code, and nothing of it stays.
      const again = await d.openImage(id);
      made.add(bad);
      try {
        const receiver = await d.receiveImage(bad, again.bytes, size);
        await assert.rejects(
          (async () => {
            await copyImage(again, receiver, [], (chunk, at) => {
              if (at === 0) for (let i = 1024; i < Math.min(8192, chunk.length); i++) chunk[i]! ^= 0xff;
            });
            await receiver.commit();
          })(),
          rejectsWith('archive_filesystem_invalid'),
        );
        await receiver.abort();
      } finally {
        await again.close();
      }
      await d.destroy(bad);
      made.delete(bad);
      assert.deepEqual(await s.leftovers(bad), []);
      assert.equal((await d.list()).includes(bad), false);
      await d.unlock(id, key);
      await d.unlockVolume(id, 'img', volKey);
      await d.destroyVolume(id, 'img');
    });

    void test('destroy leaves nothing behind and is idempotent', async (t) => {
      const started = Date.now();
      await d.destroy(id);
      t.diagnostic(`destroy took ${Date.now() - started} ms`);
      made.delete(id);
      assert.equal((await d.list()).includes(id), false);
      await assert.rejects(d.info(id), rejectsWith('not_found'));
      assert.deepEqual(await s.leftovers(id), []);
      await d.destroy(id);
      await d.destroyVolume(id, 'v1');
    });
  });
}
