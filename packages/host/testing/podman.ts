/**
 * Helpers for the container driver's tests against the real kernel. The driver runs, as in
 * production, against a space's own podman engine: each test file makes a `SpaceEngines` of its
 * own (its own run root, cgroup tree and root-owned data directory) and an `EngineSpace` per
 * test space id. Cleanup goes straight to the engines and the file system, not through the driver
 * under test, and touches only what the test made (its space ids, its tree, its directories);
 * nothing is ever pruned or matched by a broad pattern.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import assert from 'node:assert/strict';
import Dockerode from 'dockerode';
import { OcsError } from '@ocs/protocol';
import { detectCgroups } from '#src/cgroups/detect.js';
import type { CgroupDriver } from '#src/cgroups/types.js';
import { SpaceEngines, type EngineSpace } from '#src/engine/engines.js';
import { NetworkFirewall } from '#src/network/firewall.js';
import { DEFAULT_DENIED, type SpaceNetwork } from '#src/network/types.js';
import { bridgeName } from '#src/podman/names.js';
import { DOCKER_API_VERSION, LIBPOD_API_VERSION } from '#src/podman/driver.js';
import { DEFAULT_DOCKER_SOCKET, buildBusyboxImage, type BusyboxImageOptions } from './busybox-image.js';
import type { ContainerSpec, ContainerDriver } from '#src/podman/types.js';
import { requireHost } from './require-host.js';
import { removeNodeTableIfUnused } from './firewall.js';

export const MiB = 1024 * 1024;
export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * The host's dockerd, which only builds the test image (`docker import` and `save`);
 * OCS_DOCKER_SOCKET points the tests elsewhere (the require-host test uses a dead one).
 */
const BUILDER_SOCKET = process.env.OCS_DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET;
export const imageBuilder = new Dockerode({ socketPath: BUILDER_SOCKET, version: DOCKER_API_VERSION });
/** The podman the spaces' engines run; OCS_PODMAN points the tests elsewhere (the require-host test). */
const PODMAN = process.env.OCS_PODMAN ?? '/usr/bin/podman';
const CATATONIT = '/usr/bin/catatonit';

/**
 * `false`, or why the driver's tests are skipped; under OCS_REQUIRE_HOST=1 a reason throws
 * instead. Needs podman (the spaces' engines) and dockerd (it builds the test image).
 */
export async function engineSkip(): Promise<false | string> {
  const podman =
    existsSync(PODMAN) && existsSync(CATATONIT)
      ? false
      : `podman (${PODMAN}) and catatonit are not installed (scripts/install-host-deps.sh)`;
  return requireHost('podman', podman) || requireHost('dockerd (it builds the test image)', await builderUnavailable());
}

async function builderUnavailable(): Promise<false | string> {
  try {
    await imageBuilder.ping();
  } catch (err) {
    const why = (err as Error).message;
    return `dockerd is not reachable at ${BUILDER_SOCKET} (${why}); start it with scripts/start-services.sh`;
  }
  if (!existsSync('/bin/busybox')) return 'Debian busybox-static (/bin/busybox) is not installed';
  if (!existsSync(join(CGROUP_ROOT, 'memory')) && !existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) {
    return 'no memory cgroup controller mounted';
  }
  return false;
}

const base32 = (n: number) => [...randomBytes(n)].map((b) => 'abcdefghijklmnopqrstuvwxyz234567'[b % 32]).join('');

/** A fresh id in the protocol's form (`sp_` + 20 base32 characters). */
export const newSpaceId = () => `sp_${base32(20)}`;
export const newContainerId = () => `ctr_${base32(20)}`;

/** Asserts that `p` rejects with an OcsError of `code`. */
export async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof OcsError, `expected an OcsError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** One test space's engine, as the daemon would describe it. */
export interface TestSpace extends EngineSpace {
  /** The containers' cgroup parent (cgroupfs form of {@link EngineSpace.containersGroup}). */
  parent: string;
}

/**
 * Engines of the test file's own: a `SpaceEngines` with run root `/run/ocs-td<pid>`, a cgroup
 * tree `ocs-test-d<pid>` and a root-owned 0700 directory under /var/lib/ocs-test (not under /tmp,
 * so that nothing of it is inside another mount). Each space id gets, in order of first use, the
 * k-th 65,536-id subordinate range from 1,900,000,000 and the k-th /26 of 10.251.0.0/16 (offset by
 * the pid, so a leftover bridge of a killed run does not share its subnet).
 */
export interface TestEngines {
  readonly engines: SpaceEngines;
  readonly cgroups: CgroupDriver;
  /** The test's own root-owned directory, for volumes and other files of the test. */
  readonly work: string;
  space(spaceId: string): TestSpace;
  /**
   * The node's firewall, as the daemon runs it: each test space gets its table (egress none,
   * nothing published) before its engine starts; {@link rules} changes it.
   */
  readonly firewall: NetworkFirewall;
  /** Replaces the space's rules (egress, published ports); the rest as the daemon would make them. */
  rules(spaceId: string, over: Partial<Pick<SpaceNetwork, 'egress' | 'published'>>): Promise<void>;
  /** The space's driver (its engine started if it is not serving). */
  driver(spaceId: string): Promise<ContainerDriver>;
  /** A Docker API client on the space's engine socket, engine started; for looking at live objects. */
  docker(spaceId: string): Promise<Dockerode>;
  /** GET on the space engine's own (libpod) API, for what the Docker API does not show. */
  libpod<T>(spaceId: string, path: string): Promise<T>;
  /**
   * Removes every space's engine, containers, bridge and rules (the node's table too if this file
   * brought it), the cgroup tree, run root and directory.
   */
  cleanup(): Promise<void>;
}

export async function testEngines(): Promise<TestEngines> {
  const cgroups = await detectCgroups();
  const runRoot = `/run/ocs-td${process.pid}`;
  const cgroupRoot = `ocs-test-d${process.pid}`;
  await mkdir(TEST_VAR, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(join(TEST_VAR, 'docker-'));
  const engines = new SpaceEngines({ runRoot, cgroups, podman: PODMAN, idleSeconds: 600 });
  const spaces = new Map<string, TestSpace>();
  const clients = new Map<string, { docker: Dockerode; libpod: Dockerode }>();
  const subnetBase = (process.pid % 64) * 16;
  const firewall = new NetworkFirewall({ policy: { denied: [...DEFAULT_DENIED], dns: [] } });
  const nodeTableWasThere = await firewall.installed();
  const ruled = new Set<string>();
  const rules = async (spaceId: string, over: Partial<Pick<SpaceNetwork, 'egress' | 'published'>> = {}) => {
    // Another daemon's or test's tables are kept (ours: none yet), as a reconcile of a node does.
    if (!(await firewall.installed())) await firewall.reconcile([], { ours: () => false });
    const s = space(spaceId);
    await firewall.apply({
      spaceId,
      bridge: bridgeName(spaceId),
      subnet: s.subnet,
      egress: { mode: 'none' },
      published: [],
      ...over,
    });
    ruled.add(spaceId);
  };
  const ensureRules = async (spaceId: string) => {
    if (!ruled.has(spaceId)) await rules(spaceId);
  };

  const space = (spaceId: string): TestSpace => {
    let s = spaces.get(spaceId);
    if (!s) {
      const k = spaces.size;
      if (k >= 16) throw new Error('a test file has at most 16 spaces');
      const n = subnetBase + k;
      const containersGroup = `${cgroupRoot}/${spaceId}.space/workloads.slice/containers`;
      s = {
        spaceId,
        dataDir: join(work, spaceId, 'engine'),
        idMap: { base: 1_900_000_000 + k * 65536, size: 65536 },
        subnet: `10.251.${n >> 2}.${(n & 3) * 64}/26`,
        engineGroup: `${cgroupRoot}/${spaceId}.space/workloads.slice/engine`,
        containersGroup,
        parent: cgroups.absolutePath(containersGroup),
      };
      spaces.set(spaceId, s);
    }
    return s;
  };
  const clientsOf = async (spaceId: string) => {
    await ensureRules(spaceId);
    await engines.ensure(space(spaceId));
    let c = clients.get(spaceId);
    if (!c) {
      const socketPath = engines.layout(space(spaceId)).socket;
      c = {
        docker: new Dockerode({ socketPath, version: DOCKER_API_VERSION }),
        libpod: new Dockerode({ socketPath, version: LIBPOD_API_VERSION }),
      };
      clients.set(spaceId, c);
    }
    return c;
  };

  return {
    engines,
    cgroups,
    work,
    space,
    firewall,
    rules,
    driver: async (spaceId) => {
      await ensureRules(spaceId);
      return engines.driver(space(spaceId));
    },
    docker: async (spaceId) => (await clientsOf(spaceId)).docker,
    async libpod<T>(spaceId: string, path: string): Promise<T> {
      const { libpod } = await clientsOf(spaceId);
      return new Promise<T>((resolve, reject) =>
        libpod.modem.dial(
          { path: `/libpod${path}`, method: 'GET', statusCodes: { 200: true, 404: 'not found', 500: 'server error' } },
          (err: unknown, data: unknown) => (err ? reject(err) : resolve(data as T)),
        ),
      );
    },
    async cleanup() {
      // Every step is tried; the first failure is reported after the rest ran.
      const failures: unknown[] = [];
      const attempt = async (fn: () => Promise<unknown>) => fn().catch((err: unknown) => failures.push(err));
      for (const s of spaces.values()) await attempt(() => engines.remove(s));
      for (const id of ruled) await attempt(() => firewall.remove(id, bridgeName(id)));
      if (!nodeTableWasThere) await attempt(() => removeNodeTableIfUnused());
      await attempt(() => cgroups.destroy(cgroupRoot));
      await attempt(() => rm(runRoot, { recursive: true, force: true }));
      await attempt(() => rm(work, { recursive: true, force: true }));
      await rmdir(TEST_VAR).catch(() => undefined); // shared by other test files: only if empty
      if (failures.length > 0) throw failures[0];
    },
  };
}

const TEST_VAR = '/var/lib/ocs-test';

/** Builds the busybox tarball (by default under a unique temporary tag); returns its path and a cleanup. */
export async function busyboxTarball(
  opts: BusyboxImageOptions & { tag?: string } = {},
): Promise<{ path: string; remove(): void }> {
  const path = await buildBusyboxImage(opts.tag ?? `ocs-test-tmp/busybox-${base32(10)}:latest`, {
    socketPath: BUILDER_SOCKET,
    ...opts,
  });
  return { path, remove: () => rmSync(dirname(path), { recursive: true, force: true }) };
}

/** A spec with small limits; override what the test is about. */
export function specFor(spaceId: string, cgroupParent: string, over: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    spaceId,
    containerId: newContainerId(),
    name: 'c',
    image: 'busybox',
    command: ['sleep', '300'],
    cpuMillicores: 500,
    memoryBytes: 64 * MiB,
    pids: 64,
    cgroupParent,
    mounts: [],
    capAdd: [],
    ...over,
  };
}

/** Polls the driver until the container's state is one of `states`. */
export async function waitForState(
  driver: ContainerDriver,
  spaceId: string,
  containerId: string,
  states: string[],
  timeoutMs = 20_000,
) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const s = await driver.inspect(spaceId, containerId);
    if (states.includes(s.state)) return s;
    if (Date.now() > until) throw new Error(`container ${containerId} still ${s.state} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The container's log once it matches `pattern`: "running" says nothing about what it has printed yet. */
export async function waitForLogs(
  driver: ContainerDriver,
  spaceId: string,
  containerId: string,
  pattern: RegExp,
  timeoutMs = 20_000,
): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { text } = await driver.logs(spaceId, containerId, { tailLines: 100 });
    if (pattern.test(text) || Date.now() > until) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
}
