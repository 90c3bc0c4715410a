/** Spec validation: every malformed or out-of-bounds spec is refused with invalid_request. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOcsError } from '@ocs/protocol';
import type { VmSpec } from './types.js';
import { validateSpec, VM_BOUNDS } from './validate.js';

const MiB = 1024 * 1024;

const good = (): VmSpec => ({
  spaceId: 'sp_abc123',
  vmId: 'vm_def456',
  name: 'my-vm.1',
  vcpus: 2,
  memoryBytes: 512 * MiB,
  boot: { kind: 'kernel', kernel: '/srv/space/k', initrd: '/srv/space/i', cmdline: 'console=ttyS0 quiet' },
  diskPath: '/srv/space/disk.qcow2',
  consoleLogPath: '/srv/space/console.log',
  cgroupPartition: '/ocs.slice/sp_abc123.space/vms.partition',
  runAsUid: 100_123,
  storageRoot: '/srv/space',
});

function refused(mutate: (s: Record<string, unknown>) => void, field?: string): void {
  const s = good() as unknown as Record<string, unknown>;
  mutate(s);
  assert.throws(
    () => validateSpec(s),
    (err: unknown) => {
      assert.ok(isOcsError(err), String(err));
      assert.equal(err.code, 'invalid_request');
      if (field) assert.equal(err.details?.field, field, err.message);
      return true;
    },
  );
}

test('a good spec passes, with and without the optional fields', () => {
  validateSpec(good());
  validateSpec({
    spaceId: 'sp_x',
    vmId: 'vm_y',
    name: 'a',
    vcpus: 1,
    memoryBytes: VM_BOUNDS.memoryBytes.min,
    boot: { kind: 'disk', disk: '/d/boot.raw' },
    consoleLogPath: '/d/c.log',
  });
});

test('ids, name and unknown fields', () => {
  refused((s) => (s.spaceId = 'sp-abc'), 'spaceId');
  refused((s) => (s.spaceId = 'SP_abc'), 'spaceId');
  refused((s) => (s.vmId = 'vm_'), 'vmId');
  refused((s) => (s.vmId = 'vm_a-b'), 'vmId');
  refused((s) => (s.name = ''), 'name');
  refused((s) => (s.name = 'Name'), 'name');
  refused((s) => (s.name = 'a'.repeat(64)), 'name');
  refused((s) => (s.name = "x'><y"), 'name');
  refused((s) => (s.extra = 1), 'extra');
  refused((s) => ((s.boot as Record<string, unknown>).graphics = 'vnc'), 'boot.graphics');
});

test('vCPUs and memory bounds', () => {
  for (const v of [0, 65, 1.5, -1, Number.NaN, '2']) refused((s) => (s.vcpus = v), 'vcpus');
  for (const m of [VM_BOUNDS.memoryBytes.min - 1, VM_BOUNDS.memoryBytes.max + 1, 1e20, 64 * MiB + 0.5, '512']) {
    refused((s) => (s.memoryBytes = m), 'memoryBytes');
  }
  refused((s) => (s.runAsUid = 0), 'runAsUid');
  refused((s) => (s.runAsUid = -1), 'runAsUid');
});

test('paths must be absolute, normalized, distinct and inside storageRoot', () => {
  for (const p of [
    'rel/k',
    '/srv/space/../etc/k',
    '/srv//space/k',
    '/srv/space/k/',
    '/srv/./k',
    '/',
    '',
    '/srv/sp\nace',
    '/a\0b',
  ]) {
    refused((s) => ((s.boot as Record<string, unknown>).kernel = p), 'boot.kernel');
  }
  refused((s) => (s.consoleLogPath = 'console.log'), 'consoleLogPath');
  refused((s) => (s.diskPath = '/srv/space/k'), 'diskPath');
  refused((s) => (s.consoleLogPath = '/srv/space/disk.qcow2'), 'consoleLogPath');
  refused((s) => (s.diskPath = '/srv/other/disk'), 'diskPath');
  refused((s) => (s.diskPath = '/srv/spaceX/disk'), 'diskPath');
  refused((s) => (s.storageRoot = 'srv'), 'storageRoot');
});

test('boot kind and command line', () => {
  refused((s) => (s.boot = { kind: 'pxe' }), 'boot.kind');
  refused((s) => (s.boot = null), 'boot');
  refused((s) => (s.boot = { kind: 'disk' }), 'boot.disk');
  refused(
    (s) => ((s.boot as Record<string, unknown>).cmdline = 'a'.repeat(VM_BOUNDS.cmdlineChars + 1)),
    'boot.cmdline',
  );
  refused((s) => ((s.boot as Record<string, unknown>).cmdline = 'init=/bin/sh\n'), 'boot.cmdline');
  refused((s) => ((s.boot as Record<string, unknown>).cmdline = 'ünïcode'), 'boot.cmdline');
});

test('a cgroup partition libvirt would rename is refused', () => {
  refused((s) => (s.cgroupPartition = '/ocs/sp_abc123/vms'), 'cgroupPartition');
});

test('a network names a space bridge, a locally administered MAC and the gateway with its prefix', () => {
  const net = { bridge: 'ocsbr0123456789', mac: '52:54:00:80:00:2f', gateway: '10.128.0.1/26' };
  validateSpec({ ...good(), network: net });
  const bad = (over: Record<string, unknown>, field: string) =>
    refused((s) => (s.network = { ...net, ...over }), field);
  bad({ bridge: 'docker0' }, 'network.bridge');
  bad({ bridge: 'ocsbr0123456789; rm' }, 'network.bridge');
  bad({ mac: '00:11:22:33:44:55' }, 'network.mac'); // a vendor's (globally administered)
  bad({ mac: '53:54:00:80:00:2f' }, 'network.mac'); // multicast
  bad({ mac: '52:54:00:80:00:2F' }, 'network.mac');
  bad({ gateway: '10.128.0.1' }, 'network.gateway');
  bad({ gateway: '10.128.0.300/26' }, 'network.gateway');
  bad({ script: '/bin/sh' }, 'network.script');
  refused((s) => (s.network = 'ocsbr0123456789'), 'network');
});
