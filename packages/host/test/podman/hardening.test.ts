/**
 * The hardening, without an engine: what the create body says, and what the spec checks refuse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcsError } from '@ocs/protocol';
import {
  buildLibpodSpec,
  checkMountSource,
  normalizeCapabilities,
  uncoveredImageVolumes,
  validateSpec,
} from '#src/podman/hardening.js';
import { bridgeName, checkName, parseImageRef, imageRef } from '#src/podman/names.js';
import { MiB, specFor } from '@ocs/host/testing/podman';
import type { ContainerSpec } from '#src/podman/types.js';

const SPACE = 'sp_aaaaaaaaaaaaaaaaaaaa';
const PARENT = `/ocs/${SPACE}/workloads`;

function invalid(fn: () => unknown, field?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof OcsError);
    assert.equal(err.code, 'invalid_request');
    if (field !== undefined) assert.equal(err.details?.field, field);
    return true;
  });
}

test('the create body carries every hardening field', () => {
  const spec = specFor(SPACE, PARENT, {
    containerId: 'ctr_bbbbbbbbbbbbbbbbbbbb',
    mounts: [{ source: '/srv/vol', target: '/data', readOnly: true }],
    capAdd: ['NET_BIND_SERVICE'],
    env: { A: '1' },
    command: ['sleep', '1'],
    readOnlyRootfs: true,
  });
  const { capAdd } = validateSpec(spec);
  const idMap = { base: 1_900_065_536, size: 65536 };
  const o = buildLibpodSpec(spec, capAdd, 'sha256:abc', 'ocs-net', idMap);
  assert.equal(o.name, `ocs-${SPACE}-ctr_bbbbbbbbbbbbbbbbbbbb`);
  assert.equal(o.image, 'sha256:abc');
  assert.deepEqual(o.command, ['sleep', '1']);
  assert.deepEqual(o.labels, {
    'ocs.space': SPACE,
    'ocs.container': 'ctr_bbbbbbbbbbbbbbbbbbbb',
    'ocs.name': 'c',
    'ocs.image': 'busybox',
  });
  assert.deepEqual(o.env, { A: '1' });
  assert.equal(o.terminal, false);
  assert.equal(o.stdin, false);
  assert.equal(o.cgroup_parent, PARENT);
  assert.deepEqual(o.resource_limits, {
    memory: { limit: 64 * MiB, swap: 64 * MiB },
    cpu: { quota: 50_000, period: 100_000 },
    pids: { limit: 64 },
  });
  const limits = o.r_limits as { type: string; soft: number; hard: number }[];
  assert.deepEqual(
    limits.find((l) => l.type === 'nofile'),
    { type: 'nofile', hard: 1024, soft: 1024 },
  );
  const nproc = limits.find((l) => l.type === 'nproc');
  assert.ok(nproc && nproc.soft === nproc.hard && nproc.hard <= 16_384, JSON.stringify(nproc));
  assert.deepEqual(o.cap_drop, ['ALL']);
  assert.deepEqual(o.cap_add, ['CAP_NET_BIND_SERVICE']);
  assert.equal(o.no_new_privileges, true);
  assert.equal(o.privileged, false);
  // Container uid and gid 0 are the space's first subordinate id; nothing maps to a host id below it.
  const map = [{ container_id: 0, host_id: 1_900_065_536, size: 65536 }];
  assert.deepEqual(o.userns, { nsmode: 'private' });
  assert.deepEqual(o.idmappings, { UIDMap: map, GIDMap: map });
  for (const ns of ['pidns', 'ipcns', 'utsns', 'cgroupns'] as const) assert.deepEqual(o[ns], { nsmode: 'private' }, ns);
  assert.deepEqual(o.netns, { nsmode: 'bridge' });
  assert.deepEqual(o.Networks, { 'ocs-net': { aliases: ['c'] } });
  assert.deepEqual(o.devices, []);
  assert.deepEqual(o.portmappings, []);
  assert.equal(o.publish_image_ports, false);
  assert.deepEqual(o.mounts, [
    { destination: '/data', source: '/srv/vol', type: 'bind', options: ['rbind', 'rprivate', 'nosuid', 'nodev', 'ro'] },
  ]);
  assert.equal(o.image_volume_mode, 'ignore');
  assert.equal(o.read_only_filesystem, true);
  assert.equal(o.init, true);
  assert.equal(o.restart_policy, 'no');
  assert.equal(o.remove, false);
  assert.deepEqual(o.log_configuration, { driver: 'k8s-file' });
  // No field we did not mean to send (each would be one more thing the engine decides).
  assert.deepEqual(Object.keys(o).sort(), [
    'Networks',
    'cap_add',
    'cap_drop',
    'cgroup_parent',
    'cgroupns',
    'cgroups_mode',
    'command',
    'devices',
    'env',
    'idmappings',
    'image',
    'image_volume_mode',
    'init',
    'ipcns',
    'labels',
    'log_configuration',
    'mounts',
    'name',
    'netns',
    'no_new_privileges',
    'pidns',
    'portmappings',
    'privileged',
    'publish_image_ports',
    'r_limits',
    'read_only_filesystem',
    'remove',
    'resource_limits',
    'restart_policy',
    'stdin',
    'terminal',
    'userns',
    'utsns',
  ]);
  // Without a command the image's own stays; a writable mount is rw; the root file system is writable by default.
  const plain = buildLibpodSpec(
    specFor(SPACE, PARENT, { command: undefined, mounts: [{ source: '/srv/v', target: '/v', readOnly: false }] }),
    [],
    'sha256:abc',
    'ocs-net',
    idMap,
  );
  assert.equal('command' in plain, false);
  assert.deepEqual((plain.mounts as { options: string[] }[])[0]?.options.at(-1), 'rw');
  assert.equal(plain.read_only_filesystem, false);
});

test('capabilities: only the allow-list, with or without CAP_, deduplicated', () => {
  assert.deepEqual(normalizeCapabilities(['CHOWN', 'CAP_CHOWN', 'KILL']), ['CAP_CHOWN', 'CAP_KILL']);
  assert.deepEqual(normalizeCapabilities([]), []);
  for (const bad of [['SYS_ADMIN'], ['ALL'], ['CAP_NET_ADMIN'], ['chown'], [7], ['NET_RAW']]) {
    invalid(() => normalizeCapabilities(bad), 'capAdd');
  }
  invalid(() => validateSpec(specFor(SPACE, PARENT, { capAdd: ['SYS_ADMIN'] })), 'capAdd');
});

test('limits that the engine would read as "unlimited" or nonsense are refused', () => {
  const bad: Partial<ContainerSpec>[] = [
    { memoryBytes: 0 },
    { memoryBytes: -1 },
    { memoryBytes: 1 * MiB },
    { memoryBytes: 1.5 },
    { cpuMillicores: 0 },
    { cpuMillicores: 5 },
    { pids: 0 },
    { pids: -1 },
    { pids: Number.NaN },
  ];
  for (const over of bad) invalid(() => validateSpec(specFor(SPACE, PARENT, over)), Object.keys(over)[0]);
});

test('ids, names, env and command are checked', () => {
  invalid(() => validateSpec(specFor('sp_A-B', PARENT)), 'spaceId');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { containerId: 'ctr_x-y' })), 'containerId');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { image: 'ocs-sp_other/busybox' })), 'image');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { image: 'a..b' })), 'image');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { name: 'Upper' })), 'name');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { env: { 'A=B': 'x' } })), 'env');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { env: { A: 'x\0y' } })), 'env');
  invalid(() => validateSpec(specFor(SPACE, PARENT, { command: ['a\0'] })), 'command');
  assert.throws(() => checkName('x-'));
  checkName('my-app.v2_1');
});

test('the cgroup parent must be an absolute cgroupfs path naming the space', () => {
  for (const p of [
    'ocs/x',
    '/ocs/sp_other/workloads',
    '/ocs/../x',
    `/ocs/${SPACE}/../../x`,
    `/ocs//${SPACE}`,
    `/ocs/${SPACE}/`,
  ]) {
    invalid(() => validateSpec(specFor(SPACE, p)), 'cgroupParent');
  }
  validateSpec(specFor(SPACE, `/${SPACE}`));
});

test('mount shapes: absolute, normalized, no system trees, sane targets, no duplicates', () => {
  const m = (source: string, target = '/data') => ({ mounts: [{ source, target, readOnly: false }] });
  for (const source of [
    'relative',
    '/srv/../etc',
    '/srv/./x',
    '/srv/x/',
    '/',
    '/etc',
    '/etc/ssl',
    '/proc/1/root',
    '/var/run/docker.sock',
    '/var/lib/docker/volumes',
    '/srv/a\nb',
  ]) {
    invalid(() => validateSpec(specFor(SPACE, PARENT, m(source))), 'mounts[0].source');
  }
  for (const target of ['/', 'data', '/data/', '/proc', '/proc/sys', '/sys/fs', '/dev', '/a/../b', '/a b']) {
    invalid(() => validateSpec(specFor(SPACE, PARENT, m('/srv/v', target))), 'mounts[0].target');
  }
  invalid(
    () =>
      validateSpec(
        specFor(SPACE, PARENT, {
          mounts: [
            { source: '/srv/a', target: '/d', readOnly: false },
            { source: '/srv/b', target: '/d', readOnly: true },
          ],
        }),
      ),
    'mounts',
  );
});

test('mount sources: realpath must equal the path; directories and files only', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-mnt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'vol'));
  writeFileSync(join(dir, 'file'), 'x');
  symlinkSync('/etc', join(dir, 'etc-link'));
  symlinkSync(join(dir, 'vol'), join(dir, 'vol-link'));
  await checkMountSource(join(dir, 'vol'));
  await checkMountSource(join(dir, 'file'));
  const refused = async (p: string) =>
    assert.rejects(checkMountSource(p), (e: unknown) => e instanceof OcsError && e.code === 'invalid_request');
  await refused(join(dir, 'etc-link'));
  await refused(join(dir, 'vol-link'));
  await refused(join(dir, 'vol-link', 'sub'));
  await refused(join(dir, 'missing'));
  await refused('/dev/null');
});

test('image VOLUMEs not covered by a mount are reported', () => {
  assert.deepEqual(
    uncoveredImageVolumes({ '/data': {}, '/logs/': {} }, [{ source: '/s', target: '/data', readOnly: false }]),
    ['/logs'],
  );
  assert.deepEqual(uncoveredImageVolumes(null, []), []);
});

test('names: image references round-trip; bridge names fit IFNAMSIZ with a fixed prefix', () => {
  assert.deepEqual(parseImageRef(imageRef(SPACE, 'busybox')), { spaceId: SPACE, name: 'busybox' });
  assert.equal(parseImageRef('ocs-sp_x/a:v1'), undefined);
  assert.equal(parseImageRef('busybox:latest'), undefined);
  assert.match(bridgeName(SPACE), /^ocsbr[0-9a-f]{10}$/);
  assert.notEqual(bridgeName(SPACE), bridgeName('sp_bbbbbbbbbbbbbbbbbbbb'));
});
