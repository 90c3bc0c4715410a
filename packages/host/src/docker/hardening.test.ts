/**
 * The hardening, without dockerd: what the create options say, and what the spec checks refuse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcsError } from '@ocs/protocol';
import {
  buildCreateOptions,
  checkMountSource,
  normalizeCapabilities,
  uncoveredImageVolumes,
  validateSpec,
} from './hardening.js';
import { bridgeName, checkName, parseImageRef, imageRef } from './names.js';
import { MiB, specFor } from './test-support.js';
import type { ContainerSpec } from './types.js';

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

test('create options carry every hardening field', () => {
  const spec = specFor(SPACE, PARENT, {
    containerId: 'ctr_bbbbbbbbbbbbbbbbbbbb',
    mounts: [{ source: '/srv/vol', target: '/data', readOnly: true }],
    capAdd: ['NET_BIND_SERVICE'],
    env: { A: '1' },
    readOnlyRootfs: true,
  });
  const { capAdd } = validateSpec(spec);
  const o = buildCreateOptions(spec, capAdd, 'sha256:abc', 'ocs-net');
  const h = o.HostConfig;
  assert.equal(o.name, `ocs-${SPACE}-ctr_bbbbbbbbbbbbbbbbbbbb`);
  assert.equal(o.Image, 'sha256:abc');
  assert.deepEqual(o.Labels, {
    'ocs.space': SPACE,
    'ocs.container': 'ctr_bbbbbbbbbbbbbbbbbbbb',
    'ocs.name': 'c',
    'ocs.image': 'busybox',
  });
  assert.deepEqual(o.Env, ['A=1']);
  assert.equal(h.CgroupParent, PARENT);
  assert.equal(h.Memory, 64 * MiB);
  assert.equal(h.MemorySwap, 64 * MiB);
  assert.equal(h.NanoCpus, 500_000_000);
  assert.equal(h.PidsLimit, 64);
  assert.deepEqual(h.CapDrop, ['ALL']);
  assert.deepEqual(h.CapAdd, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(h.SecurityOpt, ['no-new-privileges']);
  assert.equal(h.Privileged, false);
  assert.equal(h.NetworkMode, 'ocs-net');
  assert.equal(h.IpcMode, 'private');
  assert.equal(h.CgroupnsMode, 'private');
  assert.equal(h.PidMode, '');
  assert.deepEqual(h.Devices, []);
  assert.deepEqual(h.PortBindings, {});
  assert.equal(h.PublishAllPorts, false);
  assert.deepEqual(h.Binds, []);
  assert.deepEqual(h.Mounts, [
    { Type: 'bind', Source: '/srv/vol', Target: '/data', ReadOnly: true, BindOptions: { Propagation: 'rprivate' } },
  ]);
  assert.equal(h.ReadonlyRootfs, true);
  assert.equal(h.Init, true);
  assert.deepEqual(h.LogConfig, { Type: 'json-file', Config: { 'max-size': '8m', 'max-file': '2' } });
  assert.deepEqual(o.NetworkingConfig, { EndpointsConfig: { 'ocs-net': { Aliases: ['c'] } } });
});

test('capabilities: only the allow-list, with or without CAP_, deduplicated', () => {
  assert.deepEqual(normalizeCapabilities(['CHOWN', 'CAP_CHOWN', 'KILL']), ['CAP_CHOWN', 'CAP_KILL']);
  assert.deepEqual(normalizeCapabilities([]), []);
  for (const bad of [['SYS_ADMIN'], ['ALL'], ['CAP_NET_ADMIN'], ['chown'], [7], ['NET_RAW']]) {
    invalid(() => normalizeCapabilities(bad), 'capAdd');
  }
  invalid(() => validateSpec(specFor(SPACE, PARENT, { capAdd: ['SYS_ADMIN'] })), 'capAdd');
});

test('limits that Docker would read as "unlimited" or nonsense are refused', () => {
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
