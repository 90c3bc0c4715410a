/**
 * A space with a running container and a VM restored from its backup, against real podman and
 * libvirt: the fork's container comes back running, under the fork's own subordinate ids, with
 * what it wrote in its root filesystem and its log from before, and its volume's files owned by
 * the fork's ids; the fork's VM is defined anew from its record, its disk the fork's QEMU uid's,
 * and runs as that uid.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spaceWorkloadIds } from '@ocs/node-daemon';
import { domainName } from '@ocs/host';
import { unwrapKey, type Container, type Space, type Vm } from '@ocs/protocol';
import { saveArchive } from '@ocs/client';
import {
  busyboxTar,
  reserveOwned,
  startTestNode,
  waitFor,
  MiB,
  type TestNode,
  ownersUnder,
  webWithVolume,
  lockSpace,
} from './harness.js';

let t: TestNode;
let imageTar: Buffer;
let imageDir: string;
let dir: string;

before(async () => {
  t = await startTestNode({
    workloads: true,
    total: { cpuMillicores: 16_000, memoryBytes: 8 * 1024 * MiB, storageBytes: 4 * 1024 * MiB },
  });
  ({ tar: imageTar, dir: imageDir } = await busyboxTar());
  dir = mkdtempSync(join(tmpdir(), 'ocs-e2e-restore-ctr-'));
});

after(async () => {
  await t?.stop();
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// What the container does: the first time it writes a marker into its root filesystem; every
// later start reads it back. Both land in its log.
const SCRIPT =
  'if [ -f /tmp/marker ]; then echo "again: $(cat /tmp/marker)"; else echo OCS-ROOTFS-MARKER > /tmp/marker; echo first-run; fi; ' +
  'echo OCS-VOLUME-MARKER > /data/by-container; sleep 1000';

test('a restored container runs again under the fork’s ids with its root filesystem and log; a restored VM runs as the fork’s QEMU uid', async () => {
  const resources = { cpuMillicores: 1500, memoryBytes: 512 * MiB, storageBytes: 256 * MiB, pids: 512 };
  const { owner, space, wrappedKey, api, base } = await reserveOwned(t, resources, [
    'spaces',
    'storage',
    'containers',
    'vms',
  ]);
  const made = { body: await webWithVolume(api, base, imageTar, SCRIPT) };
  // A VM booted from its own copy of an uploaded disk image (not started: no guest needed here).
  const disk = randomBytes(1024 * 1024);
  await api.call('POST', `${base}/files/disk.img`, undefined, { raw: disk });
  const vm = await api.call<Vm>('POST', `${base}/vms`, {
    name: 'box',
    vcpus: 1,
    memoryBytes: 64 * MiB,
    boot: { kind: 'disk', disk: 'disk.img' },
    start: false,
  });
  await waitFor('the first run in the log', async () => {
    const r = await api.call<{ text: string }>('GET', `${base}/containers/web/logs?tail=10`);
    return r.body.text.includes('first-run') ? true : undefined;
  });
  const row = t.node.repo.get(space.id)!;
  const ids = { uidBase: t.config.spaces.uidBase, ...t.config.workloads.containers };
  const oldBase = spaceWorkloadIds(ids, row.uid).idMap.base;

  await lockSpace(api, space.id);
  const file = join(dir, `${space.id}.ocsa`);
  await saveArchive(await api.spaces.export(space.id), file, owner);
  const fork = await api.spaces.restore(file, { leaseSeconds: 3600 });
  const key = await unwrapKey(wrappedKey, owner);
  await api.call<Space>('POST', `/v1/spaces/${fork.id}/unlock`, { sealedKey: await t.seal(key) });
  const forkBase = `/v1/spaces/${fork.id}/api`;

  // It ran at lock, so unlock starts it again: it finds its marker, and its log kept the first run.
  const list = await api.call<{ containers: Container[] }>('GET', `${forkBase}/containers`);
  assert.deepEqual(
    list.body.containers.map((c) => [c.name, c.image]),
    [['web', 'busybox']],
  );
  assert.notEqual(list.body.containers[0]!.id, made.body.id, 'a fork’s container has an id of its own');
  const log = await waitFor('the second run in the fork’s log', async () => {
    const r = await api.call<{ text: string }>('GET', `${forkBase}/containers/web/logs?tail=20`);
    return r.body.text.includes('again:') ? r.body.text : undefined;
  });
  assert.match(log, /again: OCS-ROOTFS-MARKER/);
  assert.match(log, /first-run/);
  const running = await api.call<Container>('GET', `${forkBase}/containers/web`);
  assert.equal(running.body.state, 'running');

  // Under the fork's own subordinate ids, none of the archived space's.
  const forkRow = t.node.repo.get(fork.id)!;
  const newBase = spaceWorkloadIds(ids, forkRow.uid).idMap.base;
  assert.notEqual(newBase, oldBase);
  const engine = await t.engine(fork.id);
  const [c] = await engine.listContainers({ filters: { label: [`ocs.space=${fork.id}`] } });
  const pid = (await engine.getContainer(c!.Id).inspect()).State.Pid as number;
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  assert.equal(uid, String(newBase), "the container's root is the fork's first subordinate uid");
  const seen = ownersUnder(join(t.config.storage.root, 'mnt', fork.id));
  for (const id of seen)
    assert.ok(id < oldBase || id >= oldBase + 65_536, `an id of the archived space's range (${id}) owns a file`);
  // The VM: defined anew under its new id, from the fork's storage, its disk the fork's QEMU
  // uid's, and it runs as that uid.
  const vms = await api.call<{ vms: Vm[] }>('GET', `${forkBase}/vms`);
  assert.deepEqual(
    vms.body.vms.map((v) => [v.name, v.state]),
    [['box', 'defined']],
  );
  const forkVm = vms.body.vms[0]!.id;
  assert.notEqual(forkVm, vm.body.id);
  const qemuUid = forkRow.uid + t.config.spaces.uidCount;
  const mp = (await t.storage.info(fork.id)).mountpoint;
  const xml = readFileSync(join(mp, 'node', 'vms', forkVm, 'domain.xml'), 'utf8');
  assert.ok(xml.includes(`${mp}/node/vms/${forkVm}/boot.img`), 'the definition names the fork’s copy');
  assert.ok(!xml.includes(space.id) && !xml.includes(vm.body.id), 'nothing of the archived space’s in it');
  assert.equal(statSync(join(mp, 'node', 'vms', forkVm, 'boot.img')).uid, qemuUid);
  assert.ok(readFileSync(join(mp, 'node', 'vms', forkVm, 'boot.img')).equals(disk));
  await api.call('POST', `${forkBase}/vms/box/start`, {});
  const pidFile = `/run/libvirt/qemu/${domainName(fork.id, forkVm)}.pid`;
  const qemuPid = Number(readFileSync(pidFile, 'utf8').trim());
  assert.equal(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${qemuPid}/status`, 'utf8'))?.[1], String(qemuUid));
  await api.call('POST', `${forkBase}/vms/box/stop`, {});

  // And the original still runs from its own store.
  await api.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  const original = await api.call<Container>('GET', `${base}/containers/web`);
  assert.equal(original.body.state, 'running');
});
