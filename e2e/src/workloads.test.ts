/**
 * The space API end to end, against the spaces' own podman engines, libvirtd, cgroups and
 * fscrypt: an owner loads an image, makes a volume, runs a container that writes to it, boots a
 * VM, reads their logs, stops and deletes them, with signed requests alone. Every hardening rule
 * is checked on the live object (the engine's inspect, the cgroup files, `virsh dumpxml`), not on
 * what we asked for.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { bridgeName, domainName } from '@ocs/host';
import { buildTestGuest, requireHost, testGuestUnavailable } from '@ocs/host/testing';
import { spaceCgroupLayout, spaceWorkloadIds } from '@ocs/node-daemon';
import { unwrapKey, type Container, type Vm, type Volume } from '@ocs/protocol';
import {
  busyboxTar,
  reserveOwned,
  startTestNode,
  waitFor,
  MiB,
  type Owned,
  type TestNode,
  lockSpace,
} from './harness.js';

let t: TestNode;
let imageTar: Buffer;
let imageDir: string;

before(async () => {
  t = await startTestNode({
    workloads: true,
    total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
  });
  ({ tar: imageTar, dir: imageDir } = await busyboxTar());
});

after(async () => {
  await t.stop();
  rmSync(imageDir, { recursive: true, force: true });
});

const reserve = (
  resources = { cpuMillicores: 2000, memoryBytes: 768 * MiB, storageBytes: 256 * MiB, pids: 512 },
): Promise<Owned> => reserveOwned(t, resources, ['storage', 'containers', 'vms', 'monitor']);

const code = (r: { body: unknown }) => (r.body as { error?: { code: string } }).error?.code;

// docker inspect's JSON, read field by field as the test needs it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Inspect = Record<string, any>;

/** The container as the space's own engine has it (podman's Docker-compatible inspect). */
async function engineInspect(spaceId: string, containerId: string): Promise<Inspect> {
  const engine = await t.engine(spaceId);
  const found = await engine.listContainers({
    all: true,
    filters: { label: [`ocs.space=${spaceId}`, `ocs.container=${containerId}`] },
  });
  assert.equal(found.length, 1, `one container for ${containerId}`);
  return (await engine.getContainer(found[0]!.Id).inspect()) as Inspect;
}

async function spaceContainers(spaceId: string): Promise<string[]> {
  const list = await (await t.engine(spaceId)).listContainers({ all: true });
  return list.map((c) => c.Id);
}

/** Processes of the space's containers and engine, from the kernel (the engine may be stopped). */
async function engineProcesses(spaceId: string): Promise<number[]> {
  const l = spaceCgroupLayout(t.config.cgroups.parent, spaceId);
  const inGroup = async (g: string): Promise<number[]> => {
    const own = await t.cgroups.processes(g);
    const kids = await t.cgroups.children(g);
    return [...own, ...(await Promise.all(kids.map((k) => inGroup(`${g}/${k}`)))).flat()];
  };
  return [...(await inGroup(l.engine)), ...(await inGroup(l.containers))];
}

test('an owner loads an image, makes a volume and runs a hardened container in the space that writes to it', async () => {
  const a = await reserve();
  const loaded = await a.api.call<{ name: string; dockerId: string }>('POST', `${a.base}/images/busybox`, undefined, {
    raw: imageTar,
  });
  assert.equal(loaded.status, 201);
  assert.equal(loaded.body.name, 'busybox');
  const vol = await a.api.call<Volume>('POST', `${a.base}/volumes`, { name: 'data', sizeBytes: 32 * MiB });
  assert.equal(vol.status, 201);
  assert.match(vol.body.id, /^vol_/);

  const marker = `OCS-VOLUME-${randomBytes(6).toString('hex')}`;
  const created = await a.api.call<Container>('POST', `${a.base}/containers`, {
    name: 'writer',
    image: 'busybox',
    command: ['sh', '-c', `echo ${marker} > /data/out.txt && cat /data/out.txt && exec sleep 600`],
    cpuMillicores: 250,
    memoryBytes: 64 * MiB,
    pids: 64,
    mounts: [{ volume: 'data', target: '/data' }],
  });
  assert.equal(created.status, 201);
  assert.equal(created.body.state, 'running');

  // The live container, as the space's own engine has it, and as the kernel runs it.
  const live = await engineInspect(a.space.id, created.body.id);
  const hc = live.HostConfig;
  assert.equal(hc.Privileged, false);
  assert.equal(hc.Memory, 64 * MiB);
  assert.equal(hc.MemorySwap, 64 * MiB, 'no swap');
  assert.equal(hc.PidsLimit, 64);
  assert.ok(!['host'].includes(hc.NetworkMode) && !['host'].includes(hc.PidMode) && !['host'].includes(hc.IpcMode));
  assert.deepEqual(hc.Devices ?? [], []);
  const layout = spaceCgroupLayout(t.config.cgroups.parent, a.space.id);
  assert.equal(hc.CgroupParent, t.cgroups.absolutePath(layout.containers));
  {
    // The process itself: no capability, no_new_privs, uid 0 is the space's own subordinate uid.
    const status = readFileSync(`/proc/${live.State.Pid as number}/status`, 'utf8');
    const field = (f: string) => new RegExp(`^${f}:\\s+(.*)$`, 'm').exec(status)?.[1]?.trim();
    assert.equal(field('CapEff'), '0000000000000000');
    assert.equal(field('CapBnd'), '0000000000000000');
    assert.equal(field('NoNewPrivs'), '1');
    const row = t.node.repo.get(a.space.id)!;
    const ids = spaceWorkloadIds({ uidBase: t.config.spaces.uidBase, ...t.config.workloads.containers }, row.uid);
    assert.equal(field('Uid')?.split(/\s+/)[0], String(ids.idMap.base), 'container root is the space subordinate uid');
    assert.equal(t.node.repo.get(a.space.id)!.subidBase, ids.idMap.base, 'the range is recorded with the space');
    assert.match(
      readFileSync(`/proc/${live.State.Pid as number}/uid_map`, 'utf8').trim(),
      new RegExp(`^0\\s+${ids.idMap.base}\\s+65536$`),
    );
  }
  assert.equal(live.Config.Labels['ocs.space'], a.space.id);
  // Its only mount is the volume, which lies in the space's own storage.
  assert.equal(live.Mounts.length, 1);
  assert.equal(live.Mounts[0].Destination, '/data');
  assert.ok(
    live.Mounts[0].Source.startsWith(join(t.config.storage.root, 'mnt', a.space.id) + '/'),
    live.Mounts[0].Source,
  );
  // Its processes are charged to the space's workloads group (cgroup v1 memory controller).
  const pid = live.State.Pid as number;
  const memLine = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => /:memory:/.test(l));
  assert.ok(memLine?.includes(`/${layout.containers}/`), memLine);

  const logs = await waitFor('the marker in the logs', async () => {
    const r = await a.api.call<{ text: string }>('GET', `${a.base}/containers/writer/logs?tail=10`);
    return r.body.text.includes(marker) ? r.body : undefined;
  });
  assert.ok(logs.text.includes(marker));
  assert.equal(readFileSync(join(live.Mounts[0].Source, 'out.txt'), 'utf8').trim(), marker);

  const stats = await a.api.call<{ memoryLimitBytes: number; pids: number }>(
    'GET',
    `${a.base}/containers/writer/stats`,
  );
  assert.equal(stats.body.memoryLimitBytes, 64 * MiB);
  const status = await a.api.call<{
    used: { memoryBytes: number; storageBytes: number };
    containers: number;
    volumes: number;
  }>('GET', `${a.base}/status`);
  assert.deepEqual(
    [status.body.used.memoryBytes, status.body.used.storageBytes, status.body.containers, status.body.volumes],
    [64 * MiB, 32 * MiB, 1, 1],
  );

  // Lock: the container stops, and the marker is on no raw image; unlock opens the volume too.
  const ctl = t.client({ roles: ['spaces', 'storage'], owner: a.owner });
  await lockSpace(ctl, a.space.id);
  assert.deepEqual(await engineProcesses(a.space.id), [], 'nothing of the engine or its containers runs');
  execFileSync('sync');
  const image = join(t.config.storage.root, 'images', `${a.space.id}.img`);
  if (existsSync(image))
    assert.equal(readFileSync(image).includes(Buffer.from(marker)), false, 'marker on the raw image');
  const key = await unwrapKey(a.wrappedKey, a.owner);
  await ctl.call('POST', `/v1/spaces/${a.space.id}/unlock`, { sealedKey: await t.seal(key) });
  key.fill(0);
  const reader = await a.api.call<Container>('POST', `${a.base}/containers`, {
    name: 'reader',
    image: 'busybox',
    command: ['cat', '/data/out.txt'],
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
    mounts: [{ volume: 'data', target: '/data', readOnly: true }],
  });
  const read = await waitFor('the reader to print the marker', async () => {
    const r = await a.api.call<{ text: string }>('GET', `${a.base}/containers/${reader.body.id}/logs`);
    return r.body.text.includes(marker) ? r.body.text : undefined;
  });
  assert.ok(read.includes(marker), 'one unlock opened the volume again');

  // Stop, delete; a mounted volume cannot go, then it can.
  const stopped = await a.api.call<Container>('POST', `${a.base}/containers/writer/stop`, {});
  assert.notEqual(stopped.body.state, 'running');
  assert.equal(code(await a.api.send('DELETE', `${a.base}/volumes/data`)), 'conflict');
  for (const c of ['writer', 'reader'])
    assert.equal((await a.api.call('DELETE', `${a.base}/containers/${c}`)).status, 204);
  assert.deepEqual(await spaceContainers(a.space.id), []);
  assert.equal(code(await a.api.send('GET', `${a.base}/containers/writer`)), 'not_found');
  assert.equal((await a.api.call('DELETE', `${a.base}/volumes/data`)).status, 204);
  assert.equal((await a.api.call('DELETE', `${a.base}/images/busybox`)).status, 204);
  const images = await a.api.call<{ images: unknown[] }>('GET', `${a.base}/images`);
  assert.deepEqual(images.body.images, []);
});

test('a container past its memory is OOM-killed; the rest of the space lives on', async () => {
  const a = await reserve();
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  const base = { image: 'busybox', cpuMillicores: 200, pids: 32 };
  await a.api.call('POST', `${a.base}/containers`, {
    ...base,
    name: 'calm',
    memoryBytes: 32 * MiB,
    command: ['sleep', '600'],
  });
  // `tail` buffers a line that never ends: memory grows until the limit kills it.
  await a.api.call('POST', `${a.base}/containers`, {
    ...base,
    name: 'hog',
    memoryBytes: 16 * MiB,
    command: ['tail', '/dev/zero'],
  });
  const hog = await waitFor('the hog to be killed', async () => {
    const r = await a.api.call<Container>('GET', `${a.base}/containers/hog`);
    return r.body.state === 'exited' ? r.body : undefined;
  });
  assert.equal(hog.oomKilled, true);
  assert.equal((await a.api.call<Container>('GET', `${a.base}/containers/calm`)).body.state, 'running');
  assert.equal((await a.api.call<{ spaceId: string }>('GET', `${a.base}/status`)).status, 200);
});

test('the budget holds: a request over it is budget_exceeded and leaves nothing behind', async () => {
  const a = await reserve({ cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB, pids: 128 });
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  const one = { image: 'busybox', command: ['sleep', '600'], cpuMillicores: 600, memoryBytes: 128 * MiB, pids: 32 };
  await a.api.call('POST', `${a.base}/containers`, { ...one, name: 'first' });
  const over = await a.api.send('POST', `${a.base}/containers`, { ...one, name: 'second' });
  assert.equal(over.status, 409);
  assert.equal(code(over), 'budget_exceeded');
  assert.equal((over.body as { error: { details: { resource: string } } }).error.details.resource, 'cpuMillicores');
  assert.equal((await spaceContainers(a.space.id)).length, 1, 'nothing half-made');
  const mem = await a.api.send('POST', `${a.base}/containers`, {
    ...one,
    cpuMillicores: 100,
    memoryBytes: 200 * MiB,
    name: 'third',
  });
  assert.equal(code(mem), 'budget_exceeded');
  const vol = await a.api.send('POST', `${a.base}/volumes`, { name: 'big', sizeBytes: 65 * MiB });
  assert.equal(code(vol), 'budget_exceeded');
  await a.api.call('POST', `${a.base}/files/disk.img`, undefined, { raw: randomBytes(4096) });
  const vm = await a.api.send('POST', `${a.base}/vms`, {
    name: 'v',
    vcpus: 1,
    memoryBytes: 512 * MiB,
    boot: { kind: 'disk', disk: 'disk.img' },
  });
  assert.equal(code(vm), 'budget_exceeded');
  const list = await a.api.call<{ containers: Container[] }>('GET', `${a.base}/containers`);
  assert.deepEqual(
    list.body.containers.map((c) => c.name),
    ['first'],
  );
  // Privileges cannot be asked for: the schema knows no such field, and capabilities are an allow-list.
  assert.equal(
    code(await a.api.send('POST', `${a.base}/containers`, { ...one, name: 'p', privileged: true })),
    'invalid_request',
  );
  assert.equal(
    code(await a.api.send('POST', `${a.base}/containers`, { ...one, name: 'p', capAdd: ['SYS_ADMIN'] })),
    'invalid_request',
  );
});

test('cross-space, unsigned and wrong-role requests fail for the right reason and touch nothing', async () => {
  const a = await reserve();
  const b = await reserve();
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  const ctr = await a.api.call<Container>('POST', `${a.base}/containers`, {
    name: 'mine',
    image: 'busybox',
    command: ['sleep', '600'],
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
  });
  // B's owner, with every role, signing requests for A's space: not_owner, whatever the route.
  const bOnA = t.client({ roles: ['storage', 'containers', 'vms', 'monitor'], owner: b.owner });
  for (const [method, path, body] of [
    ['GET', `${a.base}/containers`, undefined],
    ['GET', `${a.base}/containers/mine/logs`, undefined],
    ['POST', `${a.base}/containers/mine/stop`, {}],
    ['DELETE', `${a.base}/containers/mine`, undefined],
    ['POST', `${a.base}/volumes`, { name: 'x', sizeBytes: 16 * MiB }],
    ['DELETE', `${a.base}/images/busybox`, undefined],
    ['POST', `${a.base}/vms`, { name: 'x', vcpus: 1, memoryBytes: 64 * MiB, boot: { kind: 'disk', disk: 'x' } }],
  ] as const) {
    const r = await bOnA.send(method, path, body);
    assert.equal(code(r), 'not_owner', `${method} ${path}`);
  }
  // A's container id through B's own space: B cannot see it there either.
  assert.equal(code(await b.api.send('GET', `${b.base}/containers/${ctr.body.id}`)), 'not_found');
  assert.deepEqual(
    (await b.api.call<{ images: unknown[] }>('GET', `${b.base}/images`)).body.images,
    [],
    "B sees none of A's images",
  );
  // Unsigned, and signed but with a role that does not cover the route.
  const unsigned = t.client({ roles: ['containers'] });
  assert.equal(code(await unsigned.send('GET', `${a.base}/containers`)), 'signature_missing');
  const monitor = t.client({ roles: ['monitor'], owner: a.owner });
  assert.equal(code(await monitor.send('POST', `${a.base}/containers/mine/stop`, {})), 'role_missing');
  // A's container is still running, untouched.
  assert.equal((await a.api.call<Container>('GET', `${a.base}/containers/mine`)).body.state, 'running');
});

test('uploaded files are listed with their digest; a name is never overwritten', async () => {
  const a = await reserve();
  const body = randomBytes(4096);
  const ok = await a.api.call<{ name: string; sha256: string; sizeBytes: number }>(
    'POST',
    `${a.base}/files/blob`,
    undefined,
    {
      raw: body,
    },
  );
  assert.equal(ok.status, 201);
  assert.equal(ok.body.sizeBytes, body.length);
  assert.equal(ok.body.sha256, createHash('sha256').update(body).digest('hex'));
  assert.equal(code(await a.api.send('POST', `${a.base}/files/blob`, undefined, { raw: randomBytes(16) })), 'conflict');
  const files = await a.api.call<{ files: { name: string }[] }>('GET', `${a.base}/files`);
  assert.deepEqual(
    files.body.files.map((f) => f.name),
    ['blob'],
  );
  assert.equal(code(await a.api.send('POST', `${a.base}/files/.hidden`, undefined, { raw: body })), 'invalid_request');
  assert.equal((await a.api.call('DELETE', `${a.base}/files/blob`)).status, 204);
  assert.equal(code(await a.api.send('DELETE', `${a.base}/files/blob`)), 'not_found');
});

test('an owner boots a VM from an uploaded kernel and initramfs, reads its console, stops and deletes it', async (tc) => {
  const why = requireHost('a test guest (kernel + busybox)', (await testGuestUnavailable()) ?? false);
  if (why) return tc.skip(why);
  const a = await reserve({ cpuMillicores: 2000, memoryBytes: 768 * MiB, storageBytes: 256 * MiB, pids: 512 });
  const dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-guest-'));
  try {
    const guest = await buildTestGuest(dir, 'acpi');
    for (const [name, path] of [
      ['vmlinuz', guest.kernel],
      ['initrd', guest.initrd],
    ] as const) {
      assert.equal(
        (await a.api.call('POST', `${a.base}/files/${name}`, undefined, { raw: readFileSync(path) })).status,
        201,
      );
    }
    const vm = await a.api.call<Vm>('POST', `${a.base}/vms`, {
      name: 'tiny',
      vcpus: 1,
      memoryBytes: 128 * MiB,
      boot: { kind: 'kernel', kernel: 'vmlinuz', initrd: 'initrd', cmdline: guest.cmdline },
      diskBytes: 16 * MiB,
    });
    assert.equal(vm.status, 201);
    const text = await waitFor(
      'the boot marker on the console',
      async () => {
        const r = await a.api.call<{ text: string }>('GET', `${a.base}/vms/tiny/console`);
        return r.body.text.includes(guest.readyMarker) ? r.body.text : undefined;
      },
      60_000,
    );
    assert.ok(text.includes(guest.bootMarker));
    tc.diagnostic(`accelerator ${vm.body.accelerator}`);
    // QEMU runs as the space's workload uid: neither root, nor the uid of the space's API
    // process (whose broker socket a guest that escaped QEMU must not reach).
    const domain = domainName(a.space.id, vm.body.id);
    const qemuPid = Number(readFileSync(`/run/libvirt/qemu/${domain}.pid`, 'utf8').trim());
    const qemuUid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${qemuPid}/status`, 'utf8'))?.[1]);
    const apiUid = t.node.repo.get(a.space.id)!.uid;
    assert.equal(qemuUid, apiUid + t.config.spaces.uidCount);
    // Its memory is charged inside the space's cgroup.
    const memLine = readFileSync(`/proc/${qemuPid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => /:memory:/.test(l));
    assert.ok(memLine?.includes(`/${spaceCgroupLayout(t.config.cgroups.parent, a.space.id).vms}/`), memLine);

    // The live domain, as libvirt has it.
    const xml = execFileSync('virsh', ['-c', 'qemu:///system', 'dumpxml', domain], {
      encoding: 'utf8',
    });
    assert.match(xml, /<domain type='qemu'/);
    assert.match(xml, /<memory unit='KiB'>131072<\/memory>/);
    assert.match(xml, /<vcpu[^>]*>1<\/vcpu>/);
    const layout = spaceCgroupLayout(t.config.cgroups.parent, a.space.id);
    assert.ok(xml.includes(`<partition>/${layout.vms}</partition>`), 'the VM cgroup is inside the space');
    const storageRoot = (await t.storage.info(a.space.id)).mountpoint;
    for (const m of xml.matchAll(/<source (?:file|path)='([^']+)'/g))
      assert.ok(m[1]!.startsWith(`${storageRoot}/`), m[1]);
    assert.doesNotMatch(xml, /<console type='pty'|<graphics/, 'no interactive console');

    // A disk-booted VM runs on its own copy of the uploaded image, owned by the workload uid.
    const image = randomBytes(1024 * 1024);
    await a.api.call('POST', `${a.base}/files/disk.img`, undefined, { raw: image });
    const dvm = await a.api.call<Vm>('POST', `${a.base}/vms`, {
      name: 'fromdisk',
      vcpus: 1,
      memoryBytes: 64 * MiB,
      boot: { kind: 'disk', disk: 'disk.img' },
      start: false,
    });
    // Not started: libvirt knows nothing of it; its definition is in the space's storage only.
    const dname = domainName(a.space.id, dvm.body.id);
    const known = execFileSync('virsh', ['-c', 'qemu:///system', 'list', '--all', '--name'], { encoding: 'utf8' });
    assert.equal(known.split('\n').includes(dname), false, 'libvirt holds no definition');
    assert.equal(existsSync(`/etc/libvirt/qemu/${dname}.xml`), false);
    const dxml = readFileSync(join(storageRoot, 'node', 'vms', dvm.body.id, 'domain.xml'), 'utf8');
    const copy = /<source file=["']([^"']+boot\.img)["']/.exec(dxml)?.[1] ?? '';
    assert.ok(copy.startsWith(`${storageRoot}/node/vms/${dvm.body.id}/`), dxml);
    assert.equal(statSync(copy).uid, apiUid + t.config.spaces.uidCount);
    assert.ok(readFileSync(copy).equals(image), 'the copy is the uploaded image');
    const used = await a.api.call<{ used: { storageBytes: number } }>('GET', `${a.base}/status`);
    assert.equal(used.body.used.storageBytes, 16 * MiB + image.length);
    assert.equal((await a.api.call('DELETE', `${a.base}/vms/fromdisk`)).status, 204);

    await a.api.call('POST', `${a.base}/vms/tiny/stop`, {});
    const stopped = await a.api.call<Vm>('GET', `${a.base}/vms/tiny`);
    assert.equal(stopped.body.state, 'shutoff');
    // Stopped, the transient domain is gone from libvirt, and so is QEMU's log (it held the command line).
    assert.equal(existsSync(`/var/log/libvirt/qemu/${domain}.log`), false, "QEMU's log is removed at stop");
    assert.equal(existsSync(`/etc/libvirt/qemu/${domain}.xml`), false);
    assert.equal((await a.api.call('DELETE', `${a.base}/vms/tiny`)).status, 204);
    assert.equal(code(await a.api.send('GET', `${a.base}/vms/tiny`)), 'not_found');
    assert.deepEqual((await a.api.call<{ vms: unknown[] }>('GET', `${a.base}/vms`)).body.vms, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('destroying a space removes its containers, VMs and network', async () => {
  const a = await reserve();
  await a.api.call('POST', `${a.base}/images/busybox`, undefined, { raw: imageTar });
  await a.api.call('POST', `${a.base}/containers`, {
    name: 'c',
    image: 'busybox',
    command: ['sleep', '600'],
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
  });
  assert.equal((await spaceContainers(a.space.id)).length, 1);
  const runDir = t.containers!.layout({ spaceId: a.space.id, dataDir: '' }).runDir;
  await t.client({ roles: ['farmer'] }).call('DELETE', `/v1/spaces/${a.space.id}`, undefined, { sign: false });
  assert.equal(existsSync(runDir), false, 'the engine is gone');
  assert.equal(existsSync(`/sys/class/net/${bridgeName(a.space.id)}`), false, 'the network is gone');
  assert.equal(existsSync(join(t.config.storage.root, 'images', `${a.space.id}.img`)), false, 'its store is gone');
});
