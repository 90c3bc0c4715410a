import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcsError } from '@ocs/protocol';
import { Ledger } from '#src/state/ledger.js';
import { PortsRepo } from '#src/state/ports-repo.js';
import { SPACE_A, SPACE_B, twoSpaces } from '@ocs/node-daemon/testing';
import { WorkloadsRepo } from '#src/state/workloads-repo.js';

const MiB = 1024 * 1024;
const code = (c: string) => (err: unknown) => err instanceof OcsError && err.code === c;
const range = { first: 30_000, last: 30_003 };

function setup() {
  const { db, spaces } = twoSpaces();
  const workloads = new WorkloadsRepo(db);
  const ports = new PortsRepo(db);
  const budget = { cpuMillicores: 1000, memoryBytes: 256 * MiB, storageBytes: 64 * MiB };
  const addresses = ['10.128.0.2', '10.128.0.3'];
  const container = (spaceId: string, name: string) =>
    workloads.reserve(
      budget,
      {
        id: `ctr_${(spaceId.slice(3, 4) + name).padEnd(20, '0')}`,
        spaceId,
        kind: 'container',
        name,
        spec: {},
        cpuMillicores: 1,
        memoryBytes: 16 * MiB,
        storageBytes: 0,
        pids: 1,
      },
      { addresses },
    );
  return { db, spaces, workloads, ports, container };
}

test('workloads get the first free address of their space; none left is budget_exceeded on addresses', () => {
  const { container } = setup();
  assert.equal(container(SPACE_A, 'a').address, '10.128.0.2');
  assert.equal(container(SPACE_A, 'b').address, '10.128.0.3');
  assert.equal(container(SPACE_B, 'a').address, '10.128.0.2', 'another space has addresses of its own');
  assert.throws(
    () => container(SPACE_A, 'c'),
    (e: unknown) => code('budget_exceeded')(e) && (e as OcsError).details?.resource === 'addresses',
  );
});

test('publishing: the lowest free port, at most the space reserved, one port per forward, gone with its workload', () => {
  const { ports, container, workloads } = setup();
  const a = container(SPACE_A, 'web');
  const b = container(SPACE_B, 'web');
  const A = { id: SPACE_A, ports: 2 };
  const p1 = ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 80 });
  assert.deepEqual(
    { hostPort: p1.hostPort, name: p1.name, kind: p1.kind, address: p1.address, port: p1.port },
    { hostPort: 30_000, name: 'web', kind: 'container', address: '10.128.0.2', port: 80 },
  );
  assert.throws(() => ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 80 }), code('conflict'));
  // UDP of the same port is another forward (and takes another port of the node).
  assert.equal(ports.publish(A, range, { workloadId: a.id, protocol: 'udp', port: 80 }).hostPort, 30_001);
  assert.throws(
    () => ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 443 }),
    (e: unknown) => code('budget_exceeded')(e) && (e as OcsError).details?.resource === 'ports',
  );
  const B = { id: SPACE_B, ports: 3 };
  assert.throws(
    () => ports.publish(B, range, { workloadId: b.id, protocol: 'tcp', port: 80, hostPort: 30_000 }),
    code('conflict'),
  );
  assert.throws(
    () => ports.publish(B, range, { workloadId: b.id, protocol: 'tcp', port: 80, hostPort: 29_999 }),
    code('invalid_request'),
  );
  assert.equal(
    ports.publish(B, range, { workloadId: b.id, protocol: 'tcp', port: 80, hostPort: 30_003 }).hostPort,
    30_003,
  );
  assert.equal(ports.publish(B, range, { workloadId: b.id, protocol: 'tcp', port: 81 }).hostPort, 30_002);
  // The range is full now (the farmer shrank it under the reservations, say).
  assert.throws(
    () => ports.publish(B, range, { workloadId: b.id, protocol: 'tcp', port: 82 }),
    code('capacity_exceeded'),
  );
  // A space cannot unpublish another's port.
  assert.throws(() => ports.unpublish(SPACE_B, 30_000), code('not_found'));
  ports.unpublish(SPACE_A, 30_000);
  assert.deepEqual(
    ports.list(SPACE_A).map((p) => p.hostPort),
    [30_001],
  );
  workloads.remove(a.id);
  assert.deepEqual(ports.list(SPACE_A), [], "a workload's forwards go with it");
  assert.deepEqual(
    ports.list(SPACE_B).map((p) => p.hostPort),
    [30_002, 30_003],
  );
});

test('the ledger counts reserved ports against the range; a node without a range gives none', () => {
  const { db } = twoSpaces();
  const space = (id: string, ports: number) => ({
    id,
    org: 'acme',
    ownerKey: 'A'.repeat(43),
    ownerFingerprint: 'SHA256:abc',
    cpuMillicores: 10,
    memoryBytes: 16 * MiB,
    storageBytes: 0,
    ports,
    leaseExpiresAt: 1,
    graceUntil: 2,
  });
  const withPorts = new Ledger(db, {
    allocatable: { cpuMillicores: 64_000, memoryBytes: 2 ** 40, storageBytes: 2 ** 40, ports: 10 },
  });
  withPorts.reserve(space('sp_cccccccccccccccccccc', 8));
  assert.throws(
    () => withPorts.reserve(space('sp_dddddddddddddddddddd', 3)),
    (e: unknown) => code('capacity_exceeded')(e) && (e as OcsError).details?.resource === 'ports',
  );
  assert.equal(withPorts.available().ports, 2);
  const none = new Ledger(db, { allocatable: { cpuMillicores: 64_000, memoryBytes: 2 ** 40, storageBytes: 2 ** 40 } });
  assert.throws(() => none.check(space('sp_eeeeeeeeeeeeeeeeeeee', 1)), code('capacity_exceeded'));
  none.check(space('sp_eeeeeeeeeeeeeeeeeeee', 0));
});

test('a port a host process holds is never published: passed over when picking, conflict when asked for', () => {
  const { ports, container } = setup();
  const a = container(SPACE_A, 'web');
  const A = { id: SPACE_A, ports: 3 };
  const inUse = new Set([30_000, 30_002]);
  assert.throws(
    () => ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 80, hostPort: 30_000, inUse }),
    (e: unknown) => code('conflict')(e) && /in use by a service of the node/.test((e as OcsError).message),
  );
  assert.equal(ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 80, inUse }).hostPort, 30_001);
  assert.equal(ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 81, inUse }).hostPort, 30_003);
  // Every port of the range is published or held: none is free.
  assert.throws(
    () => ports.publish(A, range, { workloadId: a.id, protocol: 'tcp', port: 82, inUse }),
    code('capacity_exceeded'),
  );
});
