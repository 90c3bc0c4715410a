/**
 * On start the daemon reconciles containers and VMs against its records, on the spaces' own
 * podman engines and libvirtd: a container whose space is gone, one no record explains, and one
 * whose create the daemon did not finish are removed; recorded containers of live spaces are
 * kept. Nothing of another daemon's spaces is touched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { domainName } from '@ocs/host';
import { buildBusyboxImage } from '@ocs/host/testing';
import { openDatabase, spaceCgroupLayout, SpacesRepo, WorkloadsRepo } from '@ocs/node-daemon';
import { type Container } from '@ocs/protocol';
import { reserveOwned, startTestNode, MiB, type TestNode } from './harness.js';

/** The `ocs.container` labels of what the space's own engine holds. */
async function containersOf(t: TestNode, spaceId: string): Promise<string[]> {
  const list = await (await t.engine(spaceId)).listContainers({ all: true });
  return list.map((c) => c.Labels['ocs.container'] ?? '?').sort();
}

function domainExists(name: string): boolean {
  return execFileSync('virsh', ['-c', 'qemu:///system', 'list', '--all', '--name'], { encoding: 'utf8' })
    .split('\n')
    .includes(name);
}

async function spaceWithContainer(t: TestNode, tar: Buffer, startVm = false) {
  const { owner, space, api } = await reserveOwned(
    t,
    { cpuMillicores: 2000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB },
    ['storage', 'containers', 'vms'],
  );
  await api.call('POST', `${space.apiBase}/images/busybox`, undefined, { raw: tar });
  // A VM (a disk of random bytes: QEMU runs, the firmware finds nothing to boot). Started, it is
  // a running transient domain that reconciliation must find; not started, only a definition.
  await api.call('POST', `${space.apiBase}/files/disk.img`, undefined, { raw: randomBytes(64 * 1024) });
  const vm = await api.call<{ id: string }>('POST', `${space.apiBase}/vms`, {
    name: 'vm',
    vcpus: 1,
    memoryBytes: 64 * MiB,
    boot: { kind: 'disk', disk: 'disk.img' },
    start: startVm,
  });
  const c = await api.call<Container>('POST', `${space.apiBase}/containers`, {
    name: 'kept',
    image: 'busybox',
    command: ['sleep', '600'],
    cpuMillicores: 100,
    memoryBytes: 16 * MiB,
  });
  return { space, owner, container: c.body, vmId: vm.body.id };
}

test('restart: containers of gone spaces, unrecorded, half-made and half-removed ones are removed; recorded ones stay', async () => {
  const tarPath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
  const tar = readFileSync(tarPath);
  rmSync(dirname(tarPath), { recursive: true, force: true });
  let t = await startTestNode({ workloads: true });
  let other: TestNode | undefined;
  try {
    const live = await spaceWithContainer(t, tar);
    const gone = await spaceWithContainer(t, tar, true);
    // Another daemon on the same host (and libvirtd), with a space this one never knew.
    other = await startTestNode({ workloads: true });
    const foreign = await spaceWithContainer(other, tar);

    // Behind the daemon's back, as a crash or a bug would leave them: a container no record
    // explains, and a record still `creating` whose container was made.
    const docker = await t.containers!.driver(await t.engineSpace(live.space.id));
    const cgroupParent = t.cgroups.absolutePath(spaceCgroupLayout(t.config.cgroups.parent, live.space.id).containers);
    const stray = `ctr_${'s'.repeat(20)}`;
    const half = `ctr_${'h'.repeat(20)}`;
    // A delete killed at each of its steps: after the record was marked (the container still
    // there), and after the engine removed the container (the record still there).
    const doomed = `ctr_${'d'.repeat(20)}`;
    const vanished = `ctr_${'v'.repeat(20)}`;
    for (const [id, name] of [
      [stray, 'stray'],
      [half, 'half'],
      [doomed, 'doomed'],
    ] as const)
      await docker.create({
        spaceId: live.space.id,
        containerId: id,
        name,
        image: 'busybox',
        command: ['sleep', '600'],
        cpuMillicores: 100,
        memoryBytes: 16 * MiB,
        pids: 16,
        cgroupParent,
        mounts: [],
        capAdd: [],
      });
    assert.equal((await containersOf(t, live.space.id)).length, 4);
    assert.equal(domainExists(domainName(gone.space.id, gone.vmId)), true, 'the VM runs before the restart');
    const goneEngine = t.containers!.layout({ spaceId: gone.space.id, dataDir: '' }).runDir;
    await t.engine(gone.space.id);
    assert.equal(existsSync(goneEngine), true);

    await t.stop({ keepHost: true });
    const db = openDatabase(join(t.config.stateDir, 'node.db'));
    const workloads = new WorkloadsRepo(db);
    for (const [id, name] of [
      [half, 'half'],
      [doomed, 'doomed'],
      [vanished, 'vanished'],
    ] as const)
      workloads.reserve(
        { cpuMillicores: 2000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB },
        {
          id,
          spaceId: live.space.id,
          kind: 'container',
          name,
          spec: { image: 'busybox' },
          cpuMillicores: 100,
          memoryBytes: 16 * MiB,
          storageBytes: 0,
          pids: 16,
        },
      );
    for (const id of [doomed, vanished]) {
      workloads.markReady(id);
      workloads.markRemoving(id);
    }
    // The space's record says destroyed (as after a destroy whose host teardown was lost); its container is still there.
    const spaces = new SpacesRepo(db, { uidBase: t.config.spaces.uidBase, uidCount: t.config.spaces.uidCount });
    spaces.setState(gone.space.id, ['active'], 'destroying');
    spaces.setState(gone.space.id, ['destroying'], 'destroyed');
    db.close();

    t = await startTestNode({ workloads: true, reuse: t.reuse });
    const r = await t.node.workloads.reconcile();
    assert.deepEqual(r, { undone: [], orphans: {}, orphanSpaces: [] }, 'start already did it');
    assert.equal(existsSync(goneEngine), false, "the destroyed space's engine is gone");
    assert.deepEqual(
      await t.cgroups.processes(spaceCgroupLayout(t.config.cgroups.parent, gone.space.id).engine),
      [],
      "nothing of the destroyed space's engine runs",
    );
    // VMs not started exist only as definitions in their space's storage (transient domains).
    assert.equal(domainExists(domainName(gone.space.id, gone.vmId)), false, "the destroyed space's VM is gone");
    assert.equal(existsSync(join(t.config.storage.root, 'images', `${gone.space.id}.img`)), false);
    assert.equal(await t.vms!.state(live.space.id, live.vmId), 'defined', "the live space's VM stays");
    assert.equal(await other.vms!.state(foreign.space.id, foreign.vmId), 'defined', "another daemon's VM stays");
    assert.deepEqual(await containersOf(t, live.space.id), [live.container.id], 'only the recorded container stays');
    assert.equal((await containersOf(other, foreign.space.id)).length, 1, "another daemon's space is untouched");
    const api = t.client({ roles: ['containers'], owner: live.owner });
    const listed = await api.call<{ containers: Container[] }>('GET', `${live.space.apiBase}/containers`);
    assert.deepEqual(
      listed.body.containers.map((c) => c.name),
      ['kept'],
    );
  } finally {
    try {
      await t.stop();
    } finally {
      await other?.stop();
    }
  }
});
