/**
 * The broker as a compromised space process sees it: a real unix stream connection bound to one
 * space, carrying HTTP/2 as the space process's does, a real database, and driver doubles that
 * record every call, so a test can prove that hostile requests are refused before any host driver
 * is reached.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type ClientHttp2Session } from 'node:http2';
import { createServer, connect as connectUnix, type Socket } from 'node:net';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CgroupDriver, ContainerDriver, StorageDriver, VmDriver } from '@ocs/host';
import { OcsError } from '@ocs/protocol';
import { AuditLog, PortsRepo, WorkloadsRepo } from '#src/state/index.js';
import { RefusalLog } from '#src/state/refusals.js';
import { SPACE_A, SPACE_B, twoSpaces } from '@ocs/node-daemon/testing';
import { createLogger } from '#src/logger.js';
import { Broker } from '#src/broker/broker.js';
import { WorkloadContext, nodeWorkloads, type WorkloadDeps, type ContainerEngines } from '#src/workloads/index.js';
import { serveBroker } from '#src/broker/server.js';
import { spaceDataLayout } from '#src/spaces/layout.js';

const MiB = 1024 * 1024;
const A = SPACE_A;
const B = SPACE_B;

/** A driver whose every method is recorded; `impl` answers the ones a test needs. */
function recorder<T extends object>(
  calls: string[],
  impl: Partial<Record<keyof T, (...a: unknown[]) => unknown>> = {},
): T {
  return new Proxy({} as T, {
    get(_t, prop: string) {
      if (prop === 'then') return undefined;
      if (prop === 'accelerator') return 'tcg';
      return async (...args: unknown[]) => {
        calls.push(`${prop}(${args.map((a) => (typeof a === 'string' ? a : typeof a)).join(',')})`);
        const f = (impl as Record<string, ((...a: unknown[]) => unknown) | undefined>)[prop];
        return f ? f(...args) : undefined;
      };
    },
  });
}

/** Every space's engine is this one driver double. */
function oneEngine(driver: ContainerDriver): ContainerEngines {
  return {
    driver: async () => driver,
    stop: async () => [],
    remove: async () => undefined,
    spacesWithRunDirs: async () => [],
    adoptStore: async () => undefined,
    transplant: async () => undefined,
  };
}

const ISSUER_KEYS = {
  issuers: [
    {
      issuer: 'https://idp.example',
      jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'x', kid: 'k1' }] },
      fetchedAt: 1,
    },
  ],
};

/** Each setup's own storage mountpoint (records are written there), removed after the file's tests. */
const mountpoints: string[] = [];
after(() => {
  for (const dir of mountpoints) rmSync(dir, { recursive: true, force: true });
});
function scratchMountpoint(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-broker-data-'));
  mountpoints.push(dir);
  return dir;
}

function setup(mountpoint = scratchMountpoint(), overrides: Partial<WorkloadDeps> = {}) {
  const { db, spaces } = twoSpaces();
  const calls: string[] = [];
  const workloads = new WorkloadsRepo(db);
  const audit = new AuditLog(db);
  const logger = createLogger({ level: 'silent' });
  const clock = { now: () => Date.now() };
  const context = new WorkloadContext({
    spaces,
    workloads,
    audit,
    refusals: new RefusalLog({ audit, clock, logger }),
    storage: recorder<StorageDriver>(calls, { info: () => ({ mountpoint }) }),
    cgroups: { absolutePath: (p: string) => `/${p}` } as unknown as CgroupDriver,
    containers: oneEngine(
      recorder<ContainerDriver>(calls, {
        inspect: () => ({ state: 'running', oomKilled: false }),
        listImages: () => [],
      }),
    ),
    workloadIds: () => ({ idMap: { base: 1_000_000_000, size: 65536 }, subnet: '10.128.0.0/26' }),
    vms: recorder<VmDriver>(calls),
    cgroupParent: 'ocs.slice',
    workloadUid: (u) => u + 1000,
    logger,
    clock,
    issuerKeys: () => ISSUER_KEYS,
    ports: new PortsRepo(db),
    nodeEgress: 'none',
    ...overrides,
  });
  const broker = new Broker(context, nodeWorkloads(context));
  return { db, spaces, workloads, broker, calls, audit };
}

/**
 * Two connected unix stream sockets, as the supervisor's socket pair gives: accepted on a
 * listener that is closed, and its name removed, before they are used.
 */
async function socketPair(): Promise<[daemon: Socket, space: Socket, cleanup: () => void]> {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-broker-'));
  const path = join(dir, 'pair.sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const space = connectUnix(path);
  const daemon = await accepted;
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return [daemon, space, () => (daemon.destroy(), space.destroy())];
}

/** The broker for `spaceId` on one end of a pair, and an HTTP/2 client session on the other. */
async function brokerSession(broker: Broker, spaceId: string) {
  const [daemon, space, cleanup] = await socketPair();
  const conn = serveBroker({ broker, spaceId, socket: daemon, logger: createLogger({ level: 'silent' }) });
  const session = connect('http://broker', { createConnection: () => space });
  return {
    session,
    daemonEnd: conn,
    close() {
      session.destroy();
      conn.close();
      cleanup();
    },
  };
}

function post(
  session: ClientHttp2Session,
  path: string,
  body: string | undefined,
  method = 'POST',
): Promise<{ status: number; body: { error?: { code: string } } & Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': method, ':path': path, 'content-type': 'application/json' });
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (status === 0) return reject(new Error('no answer'));
      resolve({ status, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the connection is the space: hostile requests are refused before any driver is called', async () => {
  const s = setup();
  const { session, close } = await brokerSession(s.broker, A);
  try {
    const ctr = { name: 'c', image: 'img', cpuMillicores: 100, memoryBytes: 16 * MiB };
    const hostile: [string, string | undefined, string, string?][] = [
      ['/nope', '{}', 'not_found'],
      ['/../status', '{}', 'not_found'],
      ['/createContainer', 'not json', 'invalid_request'],
      ['/createContainer', JSON.stringify({ ...ctr, privileged: true }), 'invalid_request'],
      ['/createContainer', JSON.stringify({ ...ctr, spaceId: B }), 'invalid_request'],
      ['/createContainer', JSON.stringify({ ...ctr, cgroupParent: '/' }), 'invalid_request'],
      ['/createContainer', JSON.stringify({ ...ctr, capAdd: ['SYS_ADMIN'] }), 'invalid_request'],
      ['/createContainer', JSON.stringify({ ...ctr, name: '../../etc' }), 'invalid_request'],
      [
        '/createContainer',
        JSON.stringify({ ...ctr, mounts: [{ volume: 'v', target: '/d', source: '/etc' }] }),
        'invalid_request',
      ],
      ['/createContainer', JSON.stringify({ ...ctr, cpuMillicores: 5000 }), 'budget_exceeded'],
      ['/createContainer', JSON.stringify({ ...ctr, mounts: [{ volume: 'nosuch', target: '/d' }] }), 'not_found'],
      ['/loadImage', JSON.stringify({ image: 'x', file: '../../../etc/shadow' }), 'invalid_request'],
      ['/loadImage', JSON.stringify({ image: 'x', file: '/etc/shadow' }), 'invalid_request'],
      [
        '/createVm',
        JSON.stringify({
          name: 'v',
          vcpus: 1,
          memoryBytes: 64 * MiB,
          boot: { kind: 'kernel', kernel: '/boot/vmlinuz' },
        }),
        'invalid_request',
      ],
      [
        '/createVm',
        JSON.stringify({ name: 'v', vcpus: 2, memoryBytes: 64 * MiB, boot: { kind: 'disk', disk: 'd' } }),
        'not_found',
      ],
      ['/deleteContainer', JSON.stringify({ container: 'ctr_bbbbbbbbbbbbbbbbbbbb' }), 'not_found'],
      ['/createVolume', JSON.stringify({ name: 'v', sizeBytes: 65 * MiB }), 'budget_exceeded'],
      ['/createContainer', 'x'.repeat(200 * 1024), 'body_too_large'],
    ];
    for (const [p, body, code] of hostile) {
      const r = await post(session, p, body);
      assert.equal(r.body.error?.code, code, `${p} ${body?.slice(0, 80)}`);
      assert.ok(r.status >= 400 && r.status < 500, `${p}: ${r.status}`);
    }
    assert.equal((await post(session, '/status', undefined, 'GET')).body.error?.code, 'method_not_allowed');
    assert.deepEqual(
      s.calls.filter((c) => !c.startsWith('info(')),
      [],
      'no driver was called for any hostile request',
    );
    assert.deepEqual(s.workloads.list(A), [], 'nothing recorded');
    // Refusals of changes are audited with their code.
    const refused = s.audit.page({ limit: 100 }).entries.filter((e) => e.outcome === 'refused');
    assert.ok(refused.some((e) => e.action === 'broker.createContainer' && e.code === 'budget_exceeded'));

    // A well-formed request reaches the drivers with this socket's space, whatever it names.
    const ok = await post(session, '/createContainer', JSON.stringify(ctr));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.ok(s.calls.some((c) => c.startsWith(`create(`)));
    assert.ok(
      s.calls.every((c) => !c.includes(B)),
      'nothing for space B',
    );
    assert.equal(s.workloads.list(A).length, 1);
    assert.equal(s.workloads.list(B).length, 0);

    // A locked space's broker refuses changes and reads alike.
    s.spaces.setState(A, ['active'], 'locked');
    assert.equal((await post(session, '/listContainers', '{}')).body.error?.code, 'space_locked');
    // The connection survived every refusal, the oversized body's included.
    assert.equal(session.destroyed, false);
  } finally {
    close();
  }
});

test('one connection carries calls at once: a create the engine holds up does not hold up a list', async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const calls: string[] = [];
  const s = setup(undefined, {
    containers: oneEngine(
      recorder<ContainerDriver>(calls, {
        create: () => held,
        inspect: () => ({ state: 'running', oomKilled: false }),
        listImages: () => [],
      }),
    ),
  });
  const { session, close } = await brokerSession(s.broker, A);
  try {
    const ctr = { name: 'c', image: 'img', cpuMillicores: 100, memoryBytes: 16 * MiB };
    const create = post(session, '/createContainer', JSON.stringify(ctr));
    while (!calls.some((c) => c.startsWith('create('))) await new Promise((r) => setTimeout(r, 5));
    const list = await post(session, '/status', '{}');
    assert.equal(list.status, 200, 'answered while the create waits on the engine');
    release();
    assert.equal((await create).status, 200);
  } finally {
    close();
  }
});

test("the daemon's end closing ends the calls in flight on it", async () => {
  const calls: string[] = [];
  const s = setup(undefined, {
    containers: oneEngine(recorder<ContainerDriver>(calls, { create: () => new Promise(() => undefined) })),
  });
  const { session, daemonEnd, close } = await brokerSession(s.broker, A);
  try {
    const ctr = { name: 'c', image: 'img', cpuMillicores: 100, memoryBytes: 16 * MiB };
    const create = post(session, '/createContainer', JSON.stringify(ctr));
    while (!calls.some((c) => c.startsWith('create('))) await new Promise((r) => setTimeout(r, 5));
    daemonEnd.close();
    await assert.rejects(create);
    await new Promise<void>((resolve) => (session.closed ? resolve() : session.once('close', resolve)));
  } finally {
    close();
  }
});

test('links the space planted in its own storage are refused, never followed, by image loads and VM disks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-broker-links-'));
  try {
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'root-only host data');
    const data = join(dir, 'data');
    const l = spaceDataLayout(data);
    mkdirSync(l.space, { recursive: true });
    mkdirSync(l.vms, { recursive: true });
    // The space owns files/: it can make it a link to anywhere, or put links in it.
    symlinkSync(outside, l.files);
    const s = setup(data);
    const calls = () => s.calls.filter((c) => !c.startsWith('info('));
    const vm = (disk: string) => ({ name: `v${disk}`, vcpus: 1, memoryBytes: 64 * MiB, boot: { kind: 'disk', disk } });
    await assert.rejects(s.broker.call(A, 'loadImage', { image: 'x', file: 'secret' }), { code: 'conflict' });
    await assert.rejects(s.broker.call(A, 'createVm', vm('secret')), { code: 'conflict' });
    rmSync(l.files);
    mkdirSync(l.files);
    symlinkSync(join(outside, 'secret'), join(l.files, 'disk'));
    await assert.rejects(s.broker.call(A, 'loadImage', { image: 'x', file: 'disk' }), { code: 'conflict' });
    await assert.rejects(s.broker.call(A, 'createVm', vm('disk')), { code: 'conflict' });
    assert.deepEqual(calls(), [], 'no driver saw the linked files');
    assert.deepEqual(s.workloads.list(A), []);
    assert.deepEqual(readdirSync(l.vms), [], 'no VM directory was made');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a host failure is host_failed (502) naming the part, never internal, and its detail stays in the log', async () => {
  const s = setup(undefined, {
    vms: recorder<VmDriver>([], {
      start: () => {
        throw new Error('Could not access KVM kernel module: Permission denied');
      },
    }),
    containers: oneEngine(
      recorder<ContainerDriver>([], {
        listImages: () => {
          throw new Error('dockerd: layer 9f0c... failed');
        },
      }),
    ),
  });
  const { broker } = s;
  const vm = s.workloads.reserve(
    { cpuMillicores: 1000, memoryBytes: MiB, storageBytes: MiB },
    {
      id: 'vm_aaaaaaaaaaaaaaaaaaaa',
      spaceId: A,
      kind: 'vm',
      name: 'v',
      spec: {},
      cpuMillicores: 0,
      memoryBytes: 0,
      storageBytes: 0,
      pids: 0,
    },
  );
  s.workloads.markReady(vm.id);
  for (const [op, args, part] of [
    ['startVm', { vm: 'v' }, 'libvirt/QEMU'],
    ['listImages', {}, 'the container engine'],
  ] as const) {
    const err = await broker.call(A, op, args).then(
      () => assert.fail(`${op} should fail`),
      (e: unknown) => e as { code: string; status: number; message: string },
    );
    assert.equal(err.code, 'host_failed');
    assert.equal(err.status, 502);
    assert.ok(err.message.includes(part), err.message);
    assert.doesNotMatch(err.message, /KVM kernel module|layer 9f0c/);
  }
  s.db.close();
});

test('deleting a container or VM the host already lost removes the record, and a second delete is not_found', async () => {
  const gone = () => {
    throw new OcsError('not_found', 'no such container');
  };
  const s = setup(undefined, {
    containers: oneEngine(recorder<ContainerDriver>([], { remove: gone })),
    vms: recorder<VmDriver>([], { stop: gone, undefine: gone }),
  });
  const budget = { cpuMillicores: 1000, memoryBytes: MiB, storageBytes: MiB };
  const share = { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0, pids: 0 };
  for (const [kind, id, op, arg] of [
    ['container', 'ctr_aaaaaaaaaaaaaaaaaaaa', 'deleteContainer', 'container'],
    ['vm', 'vm_aaaaaaaaaaaaaaaaaaaa', 'deleteVm', 'vm'],
  ] as const) {
    s.workloads.reserve(budget, { id, spaceId: A, kind, name: 'w', spec: {}, ...share });
    s.workloads.markReady(id);
    assert.deepEqual(await s.broker.call(A, op, { [arg]: 'w' }), {});
    assert.equal(s.workloads.find(A, kind, 'w'), undefined, `${kind} record removed`);
    await assert.rejects(s.broker.call(A, op, { [arg]: 'w' }), { code: 'not_found' });
  }
  s.db.close();
});

test('a container a delete takes meanwhile is not_found or left out, never host_failed', async () => {
  const budget = { cpuMillicores: 1000, memoryBytes: MiB, storageBytes: MiB };
  const share = { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0, pids: 0 };
  // The engine fails as podman does for a container being removed under it, while the delete
  // that is removing it has already marked (or dropped) the record.
  const raced = (id: string, drop: boolean) => () => {
    if (drop) s.workloads.remove(id);
    else s.workloads.markRemoving(id);
    throw new OcsError('host_failed', 'the container engine could not inspect the container');
  };
  const ids = { a: 'ctr_aaaaaaaaaaaaaaaaaaaa', b: 'ctr_bbbbbbbbbbbbbbbbbbbb', c: 'ctr_cccccccccccccccccccc' };
  const s = setup(undefined, {
    containers: oneEngine(
      recorder<ContainerDriver>([], {
        inspect: (_space: unknown, id: unknown) => {
          if (id === ids.b) return raced(ids.b, true)();
          return { state: 'running', oomKilled: false };
        },
        start: (_space: unknown, id: unknown) => raced(String(id), false)(),
        stats: (_space: unknown, id: unknown) => raced(String(id), true)(),
      }),
    ),
  });
  for (const [name, id] of Object.entries(ids)) {
    s.workloads.reserve(budget, { id, spaceId: A, kind: 'container', name, spec: { image: 'busybox' }, ...share });
    s.workloads.markReady(id);
  }
  // b vanishes mid-list: the list leaves it out.
  const listed = (await s.broker.call(A, 'listContainers', {})) as { containers: { name: string }[] };
  assert.deepEqual(
    listed.containers.map((c) => c.name),
    ['a', 'c'],
  );
  // a is being removed while it is started, c while its stats are read: not_found.
  await assert.rejects(s.broker.call(A, 'startContainer', { container: 'a' }), { code: 'not_found' });
  await assert.rejects(s.broker.call(A, 'containerStats', { container: 'c' }), { code: 'not_found' });
  // Once marked, a is not_found for every operation and no longer listed.
  await assert.rejects(s.broker.call(A, 'getContainer', { container: 'a' }), { code: 'not_found' });
  assert.deepEqual(((await s.broker.call(A, 'listContainers', {})) as { containers: unknown[] }).containers, []);
  // A failure with the record untouched is still the engine's failure.
  const t = setup(undefined, {
    containers: oneEngine(
      recorder<ContainerDriver>([], {
        start: () => {
          throw new OcsError('host_failed', 'the container engine could not start the container');
        },
      }),
    ),
  });
  t.workloads.reserve(budget, { id: ids.a, spaceId: A, kind: 'container', name: 'a', spec: {}, ...share });
  t.workloads.markReady(ids.a);
  await assert.rejects(t.broker.call(A, 'startContainer', { container: 'a' }), { code: 'host_failed' });
  s.db.close();
  t.db.close();
});

test('issuerKeys hands a running space the remote issuer keys the daemon holds: read-only, unaudited, active spaces only', async () => {
  const s = setup();
  const before = s.audit.page({ limit: 1000 }).entries.length;
  assert.deepEqual(await s.broker.call(A, 'issuerKeys', {}), ISSUER_KEYS);
  assert.equal(s.audit.page({ limit: 1000 }).entries.length, before, 'a read is not audited');
  await assert.rejects(s.broker.call(A, 'issuerKeys', { issuer: 'x' }), { code: 'invalid_request' });
  s.spaces.setState(A, ['active'], 'locked');
  await assert.rejects(s.broker.call(A, 'issuerKeys', {}), { code: 'space_locked' });
  assert.deepEqual(s.calls, [], 'no host driver was touched');
});

test('a space flooding refused operations leaves at most its budget in the audit log', async () => {
  const s = setup();
  for (let i = 0; i < 500; i++)
    await assert.rejects(s.broker.call(SPACE_A, 'deleteVolume', { volume: `nope-${i}` }), { code: 'not_found' });
  const chained = s.audit.page({ limit: 1000 }).entries.filter((e) => e.actor === `space:${SPACE_A}`);
  assert.equal(chained.length, 60);
  assert.equal(s.audit.verify().ok, true);
});
