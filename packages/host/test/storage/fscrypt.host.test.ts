/**
 * The fscrypt driver against the real kernel: loop devices, ext4 with the encrypt feature, the
 * Debian fscrypt tool. Every test works in a temp root of its own and removes exactly what it made
 * (loop devices are found by their backing file inside that root).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Runner } from '#src/exec.js';
import { storageConformance, rawContains } from '@ocs/host/testing/storage-conformance';
import { FscryptStorageDriver } from '#src/storage/fscrypt.js';
import { FSCRYPT_CONF, parseDirStatus } from '#src/storage/fscrypt-cli.js';
import { findMount, loopDevicesFor, parseMountinfo } from '#src/storage/loop.js';

const MiB = 1024 * 1024;
const hadRootMetadata = existsSync('/.fscrypt');
const hadGlobalConfig = existsSync(FSCRYPT_CONF);

/** Loop devices whose backing file starts with `prefix` (also when that file was deleted). */
async function loopsBackedBy(prefix: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/, 2))
    .filter(([dev, file]) => dev && file?.startsWith(prefix))
    .map(([dev]) => dev as string);
}

function mountsUnder(root: string): string[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))
    .map((m) => m.mountpoint)
    .filter((m) => m.startsWith(`${root}/`));
}

/** A driver on a fresh temp root, and the exact cleanup of that root. */
function scratch(run?: Runner) {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-fscrypt-'));
  // A root the driver makes itself, as on a fresh node (the conformance suite checks its mode).
  const driver = new FscryptStorageDriver({ root: join(dir, 'root'), ...(run ? { run } : {}) });
  return {
    dir,
    driver,
    async cleanup() {
      for (const id of await driver.list()) await driver.destroy(id).catch(() => undefined);
      for (const m of mountsUnder(driver.root).reverse()) await run_('umount', [m]);
      for (const dev of await loopsBackedBy(`${driver.root}/`)) await run_('losetup', ['-d', dev]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
const run_ = (cmd: string, args: string[]) => run(cmd, args).catch(() => undefined);

storageConformance('fscrypt', async () => {
  const sc = scratch();
  const root = sc.driver.root;
  return {
    driver: sc.driver,
    root,
    rawPaths: async (id) => [sc.driver.imagePath(id)],
    hostBytes: async (id) => sc.driver.hostBytes(id),
    async leftovers(id) {
      const image = sc.driver.imagePath(id);
      const found: string[] = [];
      if (existsSync(image)) found.push(image);
      const incoming = image.replace(/\.img$/, '.incoming');
      if (existsSync(incoming)) found.push(incoming);
      found.push(...(await loopsBackedBy(image)));
      found.push(
        ...mountsUnder(join(root, 'mnt')).filter(
          (m) => m === join(root, 'mnt', id) || m.startsWith(join(root, 'mnt', id, '/')),
        ),
      );
      if (existsSync(join(root, 'mnt', id))) found.push(join(root, 'mnt', id));
      return found;
    },
    reopen: () => new FscryptStorageDriver({ root }),
    cleanup: () => sc.cleanup(),
  };
});

test('keys never appear in any argv or environment given to a command', async () => {
  const seen: string[] = [];
  const spy: Runner = (cmd, args, opts) => {
    seen.push([cmd, ...args, ...Object.entries(opts?.env ?? {}).flat()].join('\0'));
    return run(cmd, args, opts);
  };
  const sc = scratch(spy);
  const keys = [0, 1, 2, 3].map(() => new Uint8Array(randomBytes(32)));
  const [k1, k2, kv, kw] = keys as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  try {
    await sc.driver.create('argv', 16 * MiB, k1);
    await sc.driver.createVolume('argv', 'v', MiB, kv);
    await sc.driver.lock('argv');
    await assert.rejects(sc.driver.unlock('argv', kw));
    await sc.driver.unlock('argv', k1);
    await sc.driver.rotateKey('argv', k1, k2);
    await sc.driver.unlockVolume('argv', 'v', kv);
    await sc.driver.destroy('argv');
    assert.ok(seen.length > 10);
    for (const k of keys) {
      const b = Buffer.from(k);
      for (const form of [b.toString('hex'), b.toString('base64'), b.toString('base64url'), b.toString('latin1')]) {
        for (const line of seen) assert.equal(line.includes(form), false, `a key appeared in: ${line.split('\0')[0]}`);
      }
    }
  } finally {
    await sc.cleanup();
  }
});

test('lock unmounts and detaches the loop device; unlock attaches and mounts again', async (t) => {
  const sc = scratch();
  const key = new Uint8Array(randomBytes(32));
  try {
    const info = await sc.driver.create('loopy', 16 * MiB, key);
    const image = sc.driver.imagePath('loopy');
    const fsDir = join(sc.driver.root, 'mnt', 'loopy');
    assert.equal(info.mountpoint, join(fsDir, 'data'));
    assert.equal((await loopDevicesFor(run, image)).length, 1);
    assert.match(findMount(fsDir)?.source ?? '', /^\/dev\/loop\d+$/);
    assert.equal(parseDirStatus((await run('fscrypt', ['status', info.mountpoint])).stdout).policyVersion, 2);

    await sc.driver.lock('loopy');
    assert.equal(findMount(fsDir), undefined);
    assert.deepEqual(await loopDevicesFor(run, image), []);

    const t0 = Date.now();
    await sc.driver.unlock('loopy', key);
    t.diagnostic(`unlock of an unmounted space (attach + mount + key) took ${Date.now() - t0} ms`);
    assert.equal((await loopDevicesFor(run, image)).length, 1);
    assert.ok(findMount(fsDir));

    // A wrong key leaves nothing attached.
    await sc.driver.lock('loopy');
    await assert.rejects(sc.driver.unlock('loopy', new Uint8Array(32)));
    assert.equal(findMount(fsDir), undefined);
    assert.deepEqual(await loopDevicesFor(run, image), []);
  } finally {
    await sc.cleanup();
  }
});

test('rotation shreds the old protector: its wrapped key is gone from the image', async () => {
  const sc = scratch();
  const k1 = new Uint8Array(randomBytes(32));
  const k2 = new Uint8Array(randomBytes(32));
  try {
    const info = await sc.driver.create('rot', 16 * MiB, k1);
    const fsDir = join(sc.driver.root, 'mnt', 'rot');
    const before = parseDirStatus((await run('fscrypt', ['status', info.mountpoint])).stdout);
    assert.equal(before.protectors.length, 1);
    const oldBlob = readFileSync(join(fsDir, '.fscrypt', 'protectors', before.protectors[0] as string));
    await run('sync', []);
    assert.equal(rawContains(sc.driver.imagePath('rot'), oldBlob), true, 'the search can see a protector');

    await sc.driver.rotateKey('rot', k1, k2);
    const afterStatus = parseDirStatus((await run('fscrypt', ['status', info.mountpoint])).stdout);
    assert.equal(afterStatus.protectors.length, 1);
    assert.notEqual(afterStatus.protectors[0], before.protectors[0]);
    assert.equal(afterStatus.policy, before.policy, 'same policy: the data was not re-encrypted');
    assert.deepEqual(
      readdirSync(join(fsDir, '.fscrypt', 'protectors')),
      afterStatus.protectors,
      'no bridge or old protector left',
    );
    await sc.driver.lock('rot');
    assert.equal(
      rawContains(sc.driver.imagePath('rot'), oldBlob),
      false,
      "the old protector's bytes are still in the image",
    );
  } finally {
    await sc.cleanup();
  }
});

test("destroyVolume shreds the volume's policy and protector from the image", async () => {
  const sc = scratch();
  const key = new Uint8Array(randomBytes(32));
  try {
    await sc.driver.create('dv', 16 * MiB, key);
    const { path } = await sc.driver.createVolume('dv', 'gone', MiB, new Uint8Array(randomBytes(32)));
    const st = parseDirStatus((await run('fscrypt', ['status', path])).stdout);
    const fsDir = join(sc.driver.root, 'mnt', 'dv');
    const blobs = [
      readFileSync(join(fsDir, '.fscrypt', 'policies', st.policy)),
      ...st.protectors.map((p) => readFileSync(join(fsDir, '.fscrypt', 'protectors', p))),
    ];
    await sc.driver.destroyVolume('dv', 'gone');
    await sc.driver.lock('dv');
    for (const b of blobs) assert.equal(rawContains(sc.driver.imagePath('dv'), b), false);
  } finally {
    await sc.cleanup();
  }
});

test('host side effects: only /etc/fscrypt.conf, never /.fscrypt', async (t) => {
  // Runs after the suites above have created spaces through this driver.
  assert.ok(existsSync(FSCRYPT_CONF));
  t.diagnostic(
    hadGlobalConfig
      ? `${FSCRYPT_CONF} already existed and was used as is`
      : `${FSCRYPT_CONF} was written by the driver (it stays)`,
  );
  if (!hadRootMetadata) assert.equal(existsSync('/.fscrypt'), false, '/.fscrypt was left on the root filesystem');
});

test('concurrent first creates share one bind mount of the root; close leaves nothing mounted', async () => {
  const sc = scratch();
  try {
    const ids = ['race-a', 'race-b', 'race-c'];
    await Promise.all(ids.map((id) => sc.driver.create(id, 16 * MiB, new Uint8Array(randomBytes(32)))));
    const mnt = join(sc.driver.root, 'mnt');
    const stacked = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint === mnt);
    assert.equal(stacked.length, 1, 'one bind mount of <root>/mnt');
    for (const id of ids) await sc.driver.destroy(id);
    await sc.driver.close();
    assert.equal(findMount(mnt)?.mountpoint === mnt, false, '<root>/mnt is unmounted');
    assert.deepEqual(mountsUnder(sc.driver.root), []);
  } finally {
    await sc.cleanup();
  }
});
