/**
 * A space's workloads keep their data inside its encrypted storage, on real podman, cgroups and
 * fscrypt: markers written through a container's root filesystem, its stdout, its environment,
 * its command line and a volume, and through a VM's disk and kernel command line, are, once the space is locked, on no file the node writes to and
 * not in the raw backing image; the daemon's database never held them. Unlock brings the
 * container back with its data. A container that writes past the space's size gets ENOSPC inside
 * and the node's disk is not touched.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildTestGuest, requireHost, testGuestUnavailable } from '@ocs/host/testing';
import { unwrapKey, type Container, type Vm } from '@ocs/protocol';
import { busyboxTar, reserveOwned, startTestNode, waitFor, MiB, type TestNode, lockSpace } from './harness.js';

let t: TestNode;
let imageTar: Buffer;
let imageDir: string;

before(async () => {
  t = await startTestNode({ workloads: true });
  ({ tar: imageTar, dir: imageDir } = await busyboxTar());
});

after(async () => {
  await t.stop();
  rmSync(imageDir, { recursive: true, force: true });
});

const reserve = (storageBytes: number, memoryBytes = 256 * MiB) =>
  reserveOwned(t, { cpuMillicores: 2000, memoryBytes, storageBytes, pids: 1024 }, [
    'storage',
    'containers',
    'vms',
    'spaces',
  ]);

/** Files under `roots` holding any of `markers` (never printed: the list of files is the finding). */
function filesHolding(markers: string[], roots: string[]): string[] {
  const args = ['-rlaF', '--devices=skip', '-s', ...markers.flatMap((m) => ['-e', m]), ...roots];
  try {
    return execFileSync('grep', args, { encoding: 'utf8', maxBuffer: 16 * MiB })
      .trim()
      .split('\n')
      .filter(Boolean);
  } catch (err) {
    // grep exits 1 when nothing matched.
    if ((err as { status?: number }).status === 1) return [];
    throw err;
  }
}

test('locked: no marker of a container (root filesystem, stdout, env, command, volume) or a VM (disk, kernel command line) is on the host or the raw image', async (tc) => {
  const why = requireHost('a test guest (kernel + busybox)', (await testGuestUnavailable()) ?? false);
  if (why) return tc.skip(why);
  const a = await reserve(256 * MiB, 768 * MiB);
  const mark = (what: string) => `OCSMARK-${what}-${randomBytes(8).toString('hex')}`;
  const m = {
    root: mark('root'),
    out: mark('out'),
    env: mark('env'),
    cmd: mark('cmd'),
    vol: mark('vol'),
    vmcmd: mark('vmcmd'),
    vmdisk: mark('vmdisk'),
  };
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  await a.api.call('POST', `${a.base}/volumes`, { name: 'data', sizeBytes: 32 * MiB });
  const created = await a.api.call<Container>('POST', `${a.base}/containers`, {
    name: 'writer',
    image: 'busybox',
    env: { SECRET: m.env },
    command: [
      'sh',
      '-c',
      // The command itself carries a marker; the others are built from pieces, so only what the
      // container writes can hold them whole.
      `: ${m.cmd}; echo "$SECRET" > /tmp/env; echo ${m.root.slice(0, 8)}"${m.root.slice(8)}" > /tmp/m; echo ${m.vol.slice(0, 8)}"${m.vol.slice(8)}" > /data/v; echo ${m.out.slice(0, 8)}"${m.out.slice(8)}"; exec sleep 600`,
    ],
    cpuMillicores: 200,
    memoryBytes: 32 * MiB,
    mounts: [{ volume: 'data', target: '/data' }],
  });
  assert.equal(created.body.state, 'running');
  await waitFor('the stdout marker in the logs', async () => {
    const r = await a.api.call<{ text: string }>('GET', `${a.base}/containers/writer/logs?tail=10`);
    return r.body.text.includes(m.out) ? true : undefined;
  });
  // A VM with the marker on its kernel command line and one on its disk (written from the host,
  // as its guest would: the disk is a file of the space's storage).
  const guestDir = mkdtempSync(join(tmpdir(), 'ocs-e2e-atrest-guest-'));
  try {
    const guest = await buildTestGuest(guestDir, 'hang');
    await a.api.call('POST', `${a.base}/files/vmlinuz`, undefined, { raw: readFileSync(guest.kernel) });
    await a.api.call('POST', `${a.base}/files/initrd`, undefined, { raw: readFileSync(guest.initrd) });
    const vm = await a.api.call<Vm>('POST', `${a.base}/vms`, {
      name: 'vm',
      vcpus: 1,
      memoryBytes: 128 * MiB,
      boot: { kind: 'kernel', kernel: 'vmlinuz', initrd: 'initrd', cmdline: `${guest.cmdline} ocs.mark=${m.vmcmd}` },
      diskBytes: 8 * MiB,
    });
    assert.equal(vm.body.state, 'running');
    await waitFor(
      'the guest to boot',
      async () => {
        const r = await a.api.call<{ text: string }>('GET', `${a.base}/vms/vm/console`);
        return r.body.text.includes(guest.bootMarker) ? true : undefined;
      },
      90_000,
    );
    const disk = join((await t.storage.info(a.space.id)).mountpoint, 'node', 'vms', vm.body.id, 'disk.raw');
    const fh = await open(disk, 'r+');
    const bytes = Buffer.from(m.vmdisk);
    await fh.write(bytes, 0, bytes.length, 4096);
    await fh.close();
  } finally {
    rmSync(guestDir, { recursive: true, force: true });
  }
  // While they run, their command lines (the container's argv, QEMU's -append) are root's and
  // their owner's to read, not every local user's: /proc is hidepid=invisible.
  const commandLines = (asNobody: boolean) =>
    execFileSync(asNobody ? 'setpriv' : 'ps', [
      ...(asNobody ? ['--reuid=65534', '--regid=65534', '--clear-groups', 'ps'] : []),
      '-eww',
      '-o',
      'args',
    ]).toString();
  const asRoot = commandLines(false);
  assert.ok(asRoot.includes(m.cmd) && asRoot.includes(m.vmcmd), 'root sees both command lines (the control)');
  const asNobody = commandLines(true);
  assert.ok(!asNobody.includes(m.cmd), "nobody reads no container's command line");
  assert.ok(!asNobody.includes(m.vmcmd), "nobody reads no VM's kernel command line");
  assert.ok(!/\bqemu|conmon\b/.test(asNobody), "nobody sees neither QEMU nor the container's monitor");

  const markers = Object.values(m);
  // The daemon's own records never hold the owner's command or environment, locked or not.
  execFileSync('sync');
  assert.deepEqual(
    filesHolding([m.env, m.cmd, m.vmcmd], [t.config.stateDir, '/etc/libvirt']),
    [],
    "the daemon's database or libvirt's configuration holds tenant content",
  );

  await lockSpace(a.api, a.space.id);
  execFileSync('sync');
  const image = join(t.config.storage.root, 'images', `${a.space.id}.img`);
  const roots = ['/var/lib', '/var/log', '/run', '/tmp', '/var/tmp', '/etc/libvirt', '/etc/cni', image];
  assert.deepEqual(filesHolding(markers, roots), [], 'files holding a marker after lock');

  // Unlock: the container runs again (it was running at lock), with its root filesystem and volume.
  const key = await unwrapKey(a.wrappedKey, a.owner);
  await a.api.call('POST', `/v1/spaces/${a.space.id}/unlock`, { sealedKey: await t.seal(key) });
  key.fill(0);
  const again = await a.api.call<Container>('GET', `${a.base}/containers/${created.body.id}`);
  assert.equal(again.body.state, 'running', 'unlock restored the container');
  const engine = await t.engine(a.space.id);
  const [c] = await engine.listContainers({ filters: { label: [`ocs.container=${created.body.id}`] } });
  const pid = (await engine.getContainer(c!.Id).inspect()).State.Pid;
  assert.equal(readFileSync(`/proc/${pid}/root/tmp/m`, 'utf8').trim(), m.root, 'the root filesystem kept its data');
  assert.equal(readFileSync(`/proc/${pid}/root/data/v`, 'utf8').trim(), m.vol, 'the volume kept its data');
  const vmAgain = await a.api.call<Vm>('GET', `${a.base}/vms/vm`);
  assert.equal(vmAgain.body.state, 'running', 'unlock restored the VM');
  await t.client({ roles: ['farmer'] }).call('DELETE', `/v1/spaces/${a.space.id}`, undefined, { sign: false });
});

test('a container that writes past the space size gets ENOSPC inside; the node disk is untouched', async () => {
  const size = 64 * MiB;
  const a = await reserve(size);
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  await a.api.call('POST', `${a.base}/containers`, {
    name: 'filler',
    image: 'busybox',
    // 256 MiB into a 64 MiB space. Its logs cannot say so (they live in the full space too):
    // dd's exit status does.
    command: ['dd', 'if=/dev/zero', 'of=/tmp/fill', 'bs=1M', 'count=256'],
    cpuMillicores: 200,
    memoryBytes: 32 * MiB,
  });
  const done = await waitFor(
    'dd to end',
    async () => {
      const r = await a.api.call<Container>('GET', `${a.base}/containers/filler`);
      return r.body.state === 'exited' ? r.body : undefined;
    },
    60_000,
  );
  assert.equal(done.exitCode, 1, 'dd failed: the space is full');
  // The space's backing image is sparse and never grows past the space's size.
  const image = join(t.config.storage.root, 'images', `${a.space.id}.img`);
  const st = statSync(image);
  assert.ok(st.blocks * 512 <= size, `the image holds ${st.blocks * 512} bytes, more than the space's ${size}`);
  // A full space still serves its owner, who can delete what filled it.
  assert.equal((await a.api.call('DELETE', `${a.base}/containers/filler`)).status, 204);
  const status = await a.api.call<{ used: { storageBytes: number } }>('GET', `${a.base}/status`);
  assert.equal(status.status, 200);
  await t.client({ roles: ['farmer'] }).call('DELETE', `/v1/spaces/${a.space.id}`, undefined, { sign: false });
});
