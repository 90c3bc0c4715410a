/**
 * The zfs driver. Two kinds of test, and their names say which is which:
 * - "argv logic": a fake `zfs` that only records commands and models dataset state. It proves the
 *   exact flags and that keys travel on stdin; it proves nothing about real ZFS.
 * - the shared conformance suite against real ZFS, only where a zfs binary and the kernel module
 *   exist (a file-backed pool of its own, destroyed at the end). Otherwise it is reported skipped.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  closeSync,
  openSync,
  ftruncateSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archiveImageBytes, isOcsError } from '@ocs/protocol';
import { CommandError, run, type RunOptions, type Runner } from '#src/exec.js';
import { kernelSkip } from '@ocs/host/testing/require-host';
import { storageConformance } from '@ocs/host/testing/storage-conformance';
import { parseMountinfo } from '#src/storage/loop.js';
import { ZfsStorageDriver } from '#src/storage/zfs.js';
import { readCommand } from '#src/storage/zfs-stream.js';

interface FakeDs {
  props: Record<string, string>;
  key?: Buffer;
}

interface Call {
  args: string[];
  stdin?: Buffer;
}

/** A pretend `zfs`: enough dataset state to drive the driver's logic, and a log of every call. */
function fakeZfs() {
  const ds = new Map<string, FakeDs>();
  const calls: Call[] = [];
  const fail = (args: string[], stderr: string) =>
    new CommandError({ cmd: 'zfs', args, exitCode: 1, signal: null, stderr });
  const need = (args: string[], name: string) => {
    const d = ds.get(name);
    if (!d) throw fail(args, `cannot open '${name}': dataset does not exist`);
    return d;
  };
  const root = (name: string): string => {
    let n = name;
    while (!ds.get(n)?.key && n.includes('/')) n = n.slice(0, n.lastIndexOf('/'));
    return n;
  };
  const runner: Runner = async (cmd: string, args: string[], opts?: RunOptions) => {
    assert.equal(cmd, 'zfs');
    const stdin = opts?.stdin ? Buffer.from(opts.stdin) : undefined;
    calls.push(stdin ? { args, stdin } : { args });
    const last = args[args.length - 1] as string;
    const sub = args[0] ?? '';
    const out = (stdout: string) => ({ stdout, stderr: '' });
    switch (sub) {
      case 'list': {
        const o = args[args.indexOf('-o') + 1];
        need(args, last);
        if (args.includes('-d'))
          return out(
            [...ds.keys()]
              .filter((n) => n === last || (n.startsWith(`${last}/`) && !n.slice(last.length + 1).includes('/')))
              .join('\n'),
          );
        if (args.includes('-r')) {
          const rows = [...ds.keys()].filter((n) => n === last || n.startsWith(`${last}/`));
          return out(
            rows
              .map((n) => [n, ds.get(n)?.props.mounted, root(n), ds.get(root(n))?.props.keystatus].join('\t'))
              .join('\n'),
          );
        }
        assert.equal(o, 'name');
        return out(`${last}\n`);
      }
      case 'create': {
        const props: Record<string, string> = { mounted: 'yes', keystatus: 'available', quota: '0', used: '0' };
        for (let i = 1; i < args.length - 1; i += 2) {
          assert.equal(args[i], '-o');
          const [k, v] = (args[i + 1] as string).split('=') as [string, string];
          props[k] = v;
        }
        if (props.canmount === 'off') props.mounted = 'no';
        const d: FakeDs = { props };
        if (props.encryption) d.key = stdin;
        ds.set(last, d);
        return out('');
      }
      case 'get': {
        // As ZFS counts it: a dataset's own data plus, for each descendant, the larger of what it
        // holds and its reservation.
        const usedBy = (name: string): number =>
          Number(ds.get(name)?.props.used ?? 0) +
          [...ds.keys()]
            .filter((k) => k.startsWith(`${name}/`) && !k.slice(name.length + 1).includes('/'))
            .reduce((sum, k) => sum + Math.max(usedBy(k), Number(ds.get(k)?.props.reservation ?? 0)), 0);
        const d = need(args, last);
        const names = (args[args.length - 2] as string).split(',');
        return out(
          names
            .map(
              (n) =>
                `${n}\t${n === 'keystatus' ? ds.get(root(last))?.props.keystatus : n === 'used' ? usedBy(last) : d.props[n]}`,
            )
            .join('\n'),
        );
      }
      case 'mount':
        need(args, last).props.mounted = 'yes';
        return out('');
      case 'unmount':
        need(args, last).props.mounted = 'no';
        return out('');
      case 'unload-key':
        need(args, last).props.keystatus = 'unavailable';
        return out('');
      case 'load-key': {
        const d = need(args, last);
        if (!stdin?.equals(d.key ?? Buffer.alloc(0)))
          throw fail(args, `Key load error: Incorrect key provided for '${last}'.`);
        if (!args.includes('-n')) d.props.keystatus = 'available';
        return out('');
      }
      case 'change-key':
        need(args, last).key = stdin;
        return out('');
      case 'destroy':
        for (const n of [...ds.keys()]) if (n === last || n.startsWith(`${last}/`)) ds.delete(n);
        return out('');
      default:
        throw new Error(`fake zfs: unexpected ${args.join(' ')}`);
    }
  };
  /** The calls of the subcommands `subs`, in order. */
  const callsOf = (...subs: string[]) => calls.filter((c) => subs.includes(c.args[0] as string));
  return { runner, calls, ds, callsOf };
}

const isCode = (code: string) => (e: unknown) => isOcsError(e) && e.code === code;
const MiB = 1024 * 1024;

/** The argv of an encrypted `zfs create` (raw key on stdin) bound to `size` bytes, then `rest`. */
function encryptedCreate(size: number, ...rest: string[]): string[] {
  return [
    'create',
    '-o',
    'encryption=aes-256-gcm',
    '-o',
    'keyformat=raw',
    '-o',
    'keylocation=prompt',
    '-o',
    `quota=${size}`,
    '-o',
    `reservation=${size}`,
    ...rest,
  ];
}

/** A storage root of the test's own: the driver makes its directories for real, also with a fake `zfs`. */
function scratchRoot(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-zfs-fake-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'root');
}

test('zfs argv logic (fake runner, not real ZFS): create makes an encrypted, quota-bound dataset with the key on stdin', async (t) => {
  const z = fakeZfs();
  const root = scratchRoot(t);
  const d = new ZfsStorageDriver({ pool: 'tank', root, run: z.runner });
  const key = randomBytes(32);
  const info = await d.create('sp_one', 64 * MiB, new Uint8Array(key));
  const mutating = z.callsOf('create');
  assert.deepEqual(
    mutating.map((c) => c.args),
    [
      ['create', '-o', 'canmount=off', '-o', 'mountpoint=none', 'tank/ocs'],
      encryptedCreate(
        64 * MiB,
        '-o',
        `mountpoint=${root}/mnt/sp_one`,
        '-o',
        'setuid=off',
        '-o',
        'devices=off',
        '-o',
        'acltype=posixacl',
        '-o',
        'xattr=sa',
        'tank/ocs/sp_one',
      ),
      ['create', 'tank/ocs/sp_one/data'],
      ['create', '-o', 'canmount=off', 'tank/ocs/sp_one/volumes'],
    ],
  );
  assert.deepEqual(mutating[1]?.stdin, key, 'the key goes on stdin of the encrypted create');
  assert.equal(mutating.filter((c) => c.stdin).length, 1, 'and nowhere else');
  assert.deepEqual(info, {
    id: 'sp_one',
    sizeBytes: 64 * MiB,
    usedBytes: 0,
    unlocked: true,
    mountpoint: `${root}/mnt/sp_one/data`,
    root: `${root}/mnt/sp_one`,
  });
  await assert.rejects(d.create('sp_one', 64 * MiB, new Uint8Array(key)), isCode('conflict'));
  assert.deepEqual(await d.list(), ['sp_one']);
});

test("zfs argv logic (fake runner, not real ZFS): the directories get the fscrypt driver's modes", async (t) => {
  const z = fakeZfs();
  const root = scratchRoot(t);
  const d = new ZfsStorageDriver({ pool: 'tank', root, run: z.runner });
  const info = await d.create('sp_modes', 64 * MiB, new Uint8Array(randomBytes(32)));
  const { path } = await d.createVolume('sp_modes', 'v1', 4 * MiB, new Uint8Array(randomBytes(32)));
  const mode = (p: string) => (statSync(p).mode & 0o7777).toString(8).padStart(4, '0');
  const fs = join(root, 'mnt', 'sp_modes');
  // The fake mounts nothing, so each dataset root here is the directory made for it to mount on;
  // the real-ZFS conformance run checks the mounted and unmounted states apart.
  assert.deepEqual(
    Object.fromEntries(
      [root, join(root, 'mnt'), fs, info.mountpoint, join(fs, 'volumes'), path].map((p) => [p, mode(p)]),
    ),
    {
      [root]: '0711',
      [join(root, 'mnt')]: '0711',
      [fs]: '0755',
      [info.mountpoint]: '0700',
      [join(fs, 'volumes')]: '0711',
      [path]: '0700',
    },
  );
  await d.destroyVolume('sp_modes', 'v1');
  assert.equal(existsSync(path), false, "a destroyed volume's mountpoint goes with it");
  await d.destroy('sp_modes');
  assert.equal(existsSync(fs), false, "a destroyed space's mountpoint goes with it");
});

test('zfs argv logic (fake runner, not real ZFS): lock unmounts deepest first, then unloads loaded keys; unlock checks the key', async (t) => {
  const z = fakeZfs();
  const d = new ZfsStorageDriver({ pool: 'tank', root: scratchRoot(t), run: z.runner });
  const key = randomBytes(32);
  const vkey = randomBytes(32);
  await d.create('sp_two', 64 * MiB, new Uint8Array(key));
  await d.createVolume('sp_two', 'v1', 8 * MiB, new Uint8Array(vkey));
  const vcreate = z.calls.at(-1);
  assert.deepEqual(vcreate?.args, encryptedCreate(8 * MiB, 'tank/ocs/sp_two/volumes/v1'));
  assert.deepEqual(vcreate?.stdin, vkey);
  await assert.rejects(d.createVolume('sp_two', 'big', 60 * MiB, new Uint8Array(vkey)), isCode('budget_exceeded'));

  z.calls.length = 0;
  await d.lock('sp_two');
  assert.deepEqual(
    z.callsOf('unmount', 'unload-key').map((c) => c.args),
    [
      ['unmount', 'tank/ocs/sp_two/volumes/v1'],
      ['unmount', 'tank/ocs/sp_two/data'],
      ['unmount', 'tank/ocs/sp_two'],
      ['unload-key', 'tank/ocs/sp_two/volumes/v1'],
      ['unload-key', 'tank/ocs/sp_two'],
    ],
  );
  assert.equal((await d.info('sp_two')).unlocked, false);
  await d.lock('sp_two'); // idempotent: nothing mounted, nothing loaded

  z.calls.length = 0;
  await assert.rejects(d.unlock('sp_two', new Uint8Array(32)), isCode('unwrap_failed'));
  assert.equal(
    z.calls.some((c) => c.args[0] === 'mount'),
    false,
    'a refused key mounts nothing',
  );
  await d.unlock('sp_two', new Uint8Array(key));
  assert.deepEqual(
    z.callsOf('load-key', 'mount').map((c) => c.args),
    [
      ['load-key', 'tank/ocs/sp_two'],
      ['load-key', 'tank/ocs/sp_two'],
      ['mount', 'tank/ocs/sp_two'],
      ['mount', 'tank/ocs/sp_two/data'],
    ],
  );
  await assert.rejects(d.unlock('sp_two', new Uint8Array(key)), isCode('space_unlocked'));
  await assert.rejects(d.unlockVolume('sp_two', 'v1', new Uint8Array(key)), isCode('unwrap_failed'));
  await d.unlockVolume('sp_two', 'v1', new Uint8Array(vkey));
  assert.deepEqual(z.calls.at(-1)?.args, ['mount', 'tank/ocs/sp_two/volumes/v1']);
});

test('zfs argv logic (fake runner, not real ZFS): change-key with the old key proven first; destroy -r', async (t) => {
  const z = fakeZfs();
  const d = new ZfsStorageDriver({ pool: 'tank', root: scratchRoot(t), run: z.runner });
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  const k3 = randomBytes(32);
  await d.create('sp_three', 64 * MiB, new Uint8Array(k1));

  z.calls.length = 0;
  await assert.rejects(d.rotateKey('sp_three', new Uint8Array(32), new Uint8Array(k2)), isCode('unwrap_failed'));
  assert.equal(
    z.calls.some((c) => c.args[0] === 'change-key'),
    false,
  );
  await d.rotateKey('sp_three', new Uint8Array(k1), new Uint8Array(k2));
  const keyOps = z.callsOf('load-key', 'change-key', 'unload-key');
  assert.deepEqual(
    keyOps.slice(-2).map((c) => c.args),
    [
      ['load-key', '-n', 'tank/ocs/sp_three'],
      ['change-key', '-o', 'keyformat=raw', '-o', 'keylocation=prompt', 'tank/ocs/sp_three'],
    ],
  );
  assert.deepEqual(keyOps.at(-2)?.stdin, k1);
  assert.deepEqual(keyOps.at(-1)?.stdin, k2);

  // Locked: load the old key for the change, then unload again.
  await d.lock('sp_three');
  z.calls.length = 0;
  await d.rotateKey('sp_three', new Uint8Array(k2), new Uint8Array(k3));
  assert.deepEqual(
    z.callsOf('load-key', 'change-key', 'unload-key').map((c) => c.args),
    [
      ['load-key', 'tank/ocs/sp_three'],
      ['change-key', '-o', 'keyformat=raw', '-o', 'keylocation=prompt', 'tank/ocs/sp_three'],
      ['unload-key', 'tank/ocs/sp_three'],
    ],
  );
  assert.equal((await d.info('sp_three')).unlocked, false);
  await assert.rejects(d.unlock('sp_three', new Uint8Array(k2)), isCode('unwrap_failed'));

  z.calls.length = 0;
  await d.destroy('sp_three');
  assert.deepEqual(z.callsOf('destroy').at(-1)?.args, ['destroy', '-r', 'tank/ocs/sp_three']);
  // And an image received in part, if there is one (here there is not: it is only looked for).
  assert.deepEqual(z.calls.at(-1)?.args, ['list', '-H', '-o', 'name', 'tank/ocs-incoming/sp_three']);
  await d.destroy('sp_three');
  await assert.rejects(d.info('sp_three'), isCode('not_found'));
});

test('zfs argv logic (fake runner, not real ZFS): keys appear only on stdin, never in argv', async (t) => {
  const z = fakeZfs();
  const d = new ZfsStorageDriver({ pool: 'tank/sub', root: scratchRoot(t), run: z.runner });
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)] as const;
  await d.create('sp_four', 64 * MiB, new Uint8Array(keys[0]));
  await d.createVolume('sp_four', 'v', 4 * MiB, new Uint8Array(keys[2]));
  await d.rotateKey('sp_four', new Uint8Array(keys[0]), new Uint8Array(keys[1]));
  await d.lock('sp_four');
  await d.unlock('sp_four', new Uint8Array(keys[1]));
  await d.unlockVolume('sp_four', 'v', new Uint8Array(keys[2]));
  for (const k of keys) {
    for (const form of [k.toString('hex'), k.toString('base64'), k.toString('latin1')]) {
      assert.equal(
        z.calls.some((c) => c.args.join('\0').includes(form)),
        false,
      );
    }
  }
  assert.ok(z.calls.filter((c) => c.stdin).every((c) => keys.some((k) => k.equals(c.stdin as Buffer))));
  assert.throws(() => new ZfsStorageDriver({ pool: '-o evil', run: z.runner }), /not a valid dataset name/);
});

const zfsAvailable =
  existsSync('/sys/module/zfs') &&
  (await run('zfs', ['version']).then(
    () => true,
    () => false,
  ));

if (zfsAvailable) {
  /** A pool of its own on a sparse file in a new directory, and a driver on it. */
  const scratchPool = async (name: string, bytes: number) => {
    const dir = mkdtempSync(join(tmpdir(), `ocs-${name}-`));
    const vdev = join(dir, 'vdev.img');
    const fd = openSync(vdev, 'wx', 0o600);
    ftruncateSync(fd, bytes);
    closeSync(fd);
    const pool = `ocs${name.replace(/-/g, '')}${randomBytes(4).toString('hex')}`;
    await run('zpool', ['create', '-O', 'mountpoint=none', pool, vdev]);
    const root = join(dir, 'root');
    return { dir, vdev, pool, root, driver: new ZfsStorageDriver({ pool, root }) };
  };

  storageConformance('zfs', async () => {
    const { dir, vdev, pool, root, driver } = await scratchPool('ct', 512 * MiB);
    return {
      driver,
      root,
      rawPaths: async () => [vdev],
      overshootBytes: 2 * MiB,
      hostBytes: async (id) =>
        Number((await run('zfs', ['get', '-H', '-p', '-o', 'value', 'used', `${pool}/ocs/${id}`])).stdout.trim()),
      async leftovers(id) {
        const found: string[] = [];
        for (const ds of [`${pool}/ocs/${id}`, `${pool}/ocs-incoming/${id}`])
          if (
            await run('zfs', ['list', '-H', '-o', 'name', ds]).then(
              () => true,
              () => false,
            )
          )
            found.push(ds);
        const mp = join(root, 'mnt', id);
        found.push(
          ...parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))
            .map((m) => m.mountpoint)
            .filter((m) => m === mp || m.startsWith(`${mp}/`)),
        );
        return found;
      },
      reopen: () => new ZfsStorageDriver({ pool, root }),
      async cleanup() {
        await run('zpool', ['destroy', '-f', pool]).catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });

  test("real ZFS: a received stream that is not a space's is refused and leaves nothing; one that is gets this node's properties, whatever it said", async () => {
    const { dir, pool, root, driver: d } = await scratchPool('rv', 256 * MiB);
    const size = 64 * MiB;
    const zfs = (...args: string[]) => run('zfs', args);
    const props = async (ds: string, names: string) =>
      (await zfs('get', '-H', '-o', 'value', names, ds)).stdout.trim().split('\n');
    /** Sends `snapshot` (raw when encrypted, with its children) into a receive of the new space `id`. */
    const receive = async (id: string, snapshot: string) => {
      const receiver = await d.receiveImage(id, archiveImageBytes('zfs', size), size);
      const send = readCommand('zfs', ['send', '-w', '-R', snapshot]);
      try {
        const buf = new Uint8Array(1 << 20);
        for (let at = 0, n; (n = await send.read(buf)) > 0; at += n) await receiver.write(buf.slice(0, n), at);
        await receiver.commit();
      } catch (err) {
        await receiver.abort();
        throw err;
      } finally {
        await send.close();
      }
    };
    const leftIn = async (id: string) =>
      (await zfs('list', '-H', '-o', 'name', '-r', pool)).stdout.split('\n').filter((n) => n.includes(id));
    const keyFile = join(dir, 'key');
    writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
    const encrypted = ['-o', 'encryption=aes-256-gcm', '-o', 'keyformat=raw', '-o', `keylocation=file://${keyFile}`];
    try {
      // Not encrypted at all.
      await zfs('create', '-o', 'canmount=off', `${pool}/src`);
      await zfs('create', `${pool}/src/plain`);
      await zfs('create', `${pool}/src/plain/data`);
      await zfs('create', `${pool}/src/plain/volumes`);
      await zfs('snapshot', '-r', `${pool}/src/plain@s`);
      await assert.rejects(receive('sp-plain', `${pool}/src/plain@s`), isCode('archive_filesystem_invalid'));
      assert.deepEqual(await leftIn('sp-plain'), []);
      // Encrypted, but with a dataset a space does not have (and a zvol).
      await zfs('create', ...encrypted, `${pool}/src/extra`);
      for (const c of ['data', 'volumes', 'other']) await zfs('create', `${pool}/src/extra/${c}`);
      await zfs('create', '-V', '4M', `${pool}/src/extra/volumes/zv`);
      await zfs('snapshot', '-r', `${pool}/src/extra@s`);
      await assert.rejects(receive('sp-extra', `${pool}/src/extra@s`), isCode('archive_filesystem_invalid'));
      assert.deepEqual(await leftIn('sp-extra'), []);
      // A space's layout whose properties point at the host: its data mounts over /tmp, setuid,
      // its key read from a file, no quota. Received, every one of them is this node's.
      await zfs('create', ...encrypted, '-o', 'quota=none', `${pool}/src/space`);
      await zfs('create', '-o', 'mountpoint=/tmp/ocs-evil', '-o', 'setuid=on', `${pool}/src/space/data`);
      await zfs('create', '-o', 'canmount=off', `${pool}/src/space/volumes`);
      await zfs('snapshot', '-r', `${pool}/src/space@s`);
      await receive('sp-space', `${pool}/src/space@s`);
      const ds = `${pool}/ocs/sp-space`;
      assert.deepEqual(await props(ds, 'keystatus,keylocation,quota,reservation,encryptionroot'), [
        'unavailable',
        'prompt',
        '64M',
        '64M',
        ds,
      ]);
      assert.deepEqual(await props(`${ds}/data`, 'mountpoint,setuid,encryptionroot'), [
        join(root, 'mnt', 'sp-space', 'data'),
        'off',
        ds,
      ]);
      assert.deepEqual(
        (await zfs('list', '-H', '-t', 'snapshot', '-o', 'name', '-r', ds)).stdout.trim(),
        '',
        "the stream's snapshots are dropped",
      );
      assert.deepEqual(await leftIn(`ocs-incoming`), [`${pool}/ocs-incoming`], 'no container is left');
      await d.destroy('sp-space');
      assert.deepEqual(await leftIn('sp-space'), []);
    } finally {
      await run('zpool', ['destroy', '-f', pool]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('real ZFS: a move seed sent while the space runs, dataset by dataset, one cut and resumed from its token, then only what changed once locked (cut once, sent again): the copy opens with everything; a wrong base, no seed or a token not for the seed is refused', async () => {
    const { dir, pool, driver: d } = await scratchPool('sd', 512 * MiB);
    const size = 96 * MiB;
    const zfs = (...args: string[]) => run('zfs', args);
    const snapshotsOf = async (ds: string) =>
      (await zfs('list', '-H', '-t', 'snapshot', '-o', 'name', '-r', ds)).stdout.trim().split('\n').filter(Boolean);
    /** Copies an image into a receiver in order; its length. */
    const copy = async (
      from: { read(b: Uint8Array, at: number): Promise<number> },
      to: { write(b: Uint8Array, at: number): Promise<void> },
    ) => {
      const buf = new Uint8Array(1 << 20);
      let at = 0;
      for (let n; (n = await from.read(buf, at)) > 0; at += n) await to.write(buf.slice(0, n), at);
      return at;
    };
    const key = randomBytes(32);
    const volKey = randomBytes(32);
    const newVolKey = randomBytes(32);
    const bulk = randomBytes(8 * MiB);
    const late = randomBytes(64 * 1024);
    try {
      const info = await d.create('sd-src', size, key);
      writeFileSync(join(info.mountpoint, 'bulk.bin'), bulk);
      writeFileSync(join(info.mountpoint, 'gone.bin'), randomBytes(4096));
      const { path } = await d.createVolume('sd-src', 'v1', 8 * MiB, volKey);
      writeFileSync(join(path, 'v1.bin'), randomBytes(4096));

      // The seed, while the space is open, one dataset at a time; `data`'s stream is cut.
      const plan = await d.openSeed('sd-src');
      assert.deepEqual(plan.datasets, ['.', 'data', 'volumes', 'volumes/v1'], 'parents first');
      /** One dataset of the seed into sd-dst; stopped (as a cut connection) once `cutAfter` bytes went in. */
      const sendPart = async (dataset: string, o: { cutAfter?: number; token?: string; into?: string } = {}) => {
        const part = await d.openSeedPart('sd-src', {
          base: plan.base,
          dataset,
          ...(o.token !== undefined ? { token: o.token } : {}),
        });
        const to = await d.receiveSeed(o.into ?? 'sd-dst', part.bytes, size, {
          dataset,
          resume: o.token !== undefined,
        });
        try {
          const buf = new Uint8Array(1 << 20);
          let at = 0;
          for (let n; (n = await part.read(buf, at)) > 0;) {
            await to.write(buf.slice(0, n), at);
            at += n;
            if (o.cutAfter !== undefined && at >= o.cutAfter) {
              await to.stop();
              return at;
            }
          }
          await to.hold();
          return at;
        } finally {
          await part.close();
        }
      };
      await assert.rejects(
        d.receiveSeed('sd-dst', archiveImageBytes('zfs', size), size, { dataset: 'data' }),
        isCode('conflict'),
        'a dataset before its top',
      );
      let seedBytes = await sendPart('.');
      seedBytes += await sendPart('data', { cutAfter: 2 * MiB });
      const cut = await d.seedState('sd-dst');
      assert.deepEqual(cut.held, ['.']);
      assert.equal(cut.partial?.dataset, 'data', 'the cut dataset is held in part');
      const token = cut.partial!.token;
      // The token is the other node's word: it must be this very dataset's raw seed.
      await assert.rejects(
        d.openSeedPart('sd-src', { base: plan.base, dataset: 'volumes', token }),
        isCode('conflict'),
        'a token naming another dataset than the one asked for',
      );
      await assert.rejects(
        d.openSeedPart('sd-src', { base: plan.base, dataset: 'data', token: '1-abc-de-00ff' }),
        isCode('conflict'),
        'a token that is not one',
      );
      // A token of a plain (not raw) send of the open space: resumed, it would send plaintext.
      await run('bash', [
        '-c',
        `zfs send ${pool}/ocs/sd-src/data@ocs-seed | head -c 300000 | zfs receive -s -u ${pool}/plain || true`,
      ]);
      const plainToken = (await zfs('get', '-H', '-o', 'value', 'receive_resume_token', `${pool}/plain`)).stdout.trim();
      assert.match(plainToken, /^1-/, 'the plain send left a token');
      await assert.rejects(
        d.openSeedPart('sd-src', { base: plan.base, dataset: 'data', token: plainToken }),
        (e: unknown) => isCode('conflict')(e) && /raw/.test((e as Error).message),
        'a token of a plain send',
      );
      await zfs('receive', '-A', `${pool}/plain`).catch(() => undefined);
      await zfs('destroy', '-r', `${pool}/plain`).catch(() => undefined);
      // A seed held in part goes whole with its import (`destroy`), partial receive state included.
      await sendPart('.', { into: 'sd-gone' });
      await sendPart('data', { into: 'sd-gone', cutAfter: 2 * MiB });
      assert.equal((await d.seedState('sd-gone')).partial?.dataset, 'data');
      await d.destroy('sd-gone');
      assert.deepEqual(await d.seedState('sd-gone'), { held: [] });
      assert.equal((await d.list()).includes('sd-gone'), false);
      assert.equal(
        (await zfs('list', '-H', '-r', '-o', 'name', `${pool}/ocs-incoming`)).stdout.includes('sd-gone'),
        false,
        'nothing of it is left in the pool',
      );
      // Resumed from the token: only the rest goes.
      const rest0 = await sendPart('data', { token });
      assert.ok(rest0 < bulk.length, `the resumed stream (${rest0} bytes) is the rest, not the whole again`);
      seedBytes += rest0;
      seedBytes += await sendPart('volumes');
      seedBytes += await sendPart('volumes/v1');
      assert.deepEqual(await d.seedState('sd-dst'), { held: ['.', 'data', 'volumes', 'volumes/v1'] });
      assert.ok(seedBytes > bulk.length, `the seed holds the data (${seedBytes} bytes)`);
      assert.deepEqual(await d.listSeeds(), ['sd-src']);
      assert.deepEqual(
        await d.list().then((l) => l.includes('sd-dst')),
        true,
        'a held seed is listed (a crash leaves it to reconcile)',
      );
      await assert.rejects(d.unlock('sd-dst', key), isCode('not_found'), "a held seed is nobody's space yet");

      // The space goes on: a file written, one removed, a volume added; then it is locked.
      writeFileSync(join(info.mountpoint, 'late.bin'), late);
      rmSync(join(info.mountpoint, 'gone.bin'));
      const v2 = await d.createVolume('sd-src', 'v2', 8 * MiB, newVolKey);
      writeFileSync(join(v2.path, 'v2.bin'), late);
      await d.lock('sd-src');

      await assert.rejects(
        d.openImage('sd-src', { since: '12345' }),
        isCode('conflict'),
        'a base that is not the seed',
      );
      await assert.rejects(
        d.receiveImage('sd-none', archiveImageBytes('zfs', size), size, { onSeed: true }),
        isCode('conflict'),
        'an increment with no seed held',
      );
      // An increment cut short (as a dropped connection): the seed stays, and the increment
      // sent again lands on it alone (what the cut one brought is rolled back first).
      const cutInc = await d.openImage('sd-src', { since: plan.base });
      const cutRest = await d.receiveImage('sd-dst', cutInc.bytes, size, { onSeed: true });
      try {
        const buf = new Uint8Array(96 * 1024);
        for (let at = 0; at < 96 * 1024;) {
          const n = await cutInc.read(buf.subarray(0, 96 * 1024 - at), at);
          assert.ok(n > 0, `the increment is longer than the cut (${at} bytes)`);
          await cutRest.write(buf.slice(0, n), at);
          at += n;
        }
        await cutRest.stop!();
      } finally {
        await cutInc.close();
      }
      assert.deepEqual((await d.seedState('sd-dst')).held, ['.', 'data', 'volumes', 'volumes/v1'], 'the seed stays');
      const inc = await d.openImage('sd-src', { since: plan.base });
      const rest = await d.receiveImage('sd-dst', inc.bytes, size, { onSeed: true });
      let incBytes: number;
      try {
        incBytes = await copy(inc, rest);
        await rest.commit();
      } finally {
        await inc.close();
      }
      assert.ok(incBytes < seedBytes / 4, `the increment (${incBytes} bytes) is not the whole again (${seedBytes})`);
      assert.deepEqual(await snapshotsOf(`${pool}/ocs/sd-dst`), [], "the streams' snapshots are dropped");
      await d.unlock('sd-dst', key);
      const copied = (await d.info('sd-dst')).mountpoint;
      assert.deepEqual(readFileSync(join(copied, 'bulk.bin')), bulk);
      assert.deepEqual(readFileSync(join(copied, 'late.bin')), late);
      assert.equal(existsSync(join(copied, 'gone.bin')), false, 'a file removed after the seed is gone');
      await d.unlockVolume('sd-dst', 'v2', newVolKey);
      assert.deepEqual(
        readFileSync(join(d.volumePath('sd-dst', 'v2'), 'v2.bin')),
        late,
        'a volume made after the seed',
      );
      await d.unlockVolume('sd-dst', 'v1', volKey);

      // The source keeps its seed until told; then none is left.
      assert.ok((await snapshotsOf(`${pool}/ocs/sd-src`)).some((n) => n.endsWith('@ocs-seed')));
      await d.dropSeed('sd-src');
      await d.dropSeed('sd-src'); // idempotent
      assert.deepEqual(await snapshotsOf(`${pool}/ocs/sd-src`), []);
      assert.deepEqual(await d.listSeeds(), []);
      await d.destroy('sd-dst');
      await d.destroy('sd-src');
    } finally {
      await run('zpool', ['destroy', '-f', pool]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
} else {
  test('zfs driver against real ZFS (storage conformance)', (t) => {
    t.skip(kernelSkip('zfs', 'no ZFS kernel module on this machine: the zfs driver is untested against real ZFS here'));
  });
}
