/**
 * Helpers for the Docker driver's tests against the real dockerd. Cleanup here goes straight to
 * dockerode, not through the driver under test, and touches only the given space ids' objects
 * (by label and exact name); nothing is ever pruned or matched by a broad pattern.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import assert from 'node:assert/strict';
import Dockerode from 'dockerode';
import { OcsError } from '@ocs/protocol';
import { DEFAULT_DOCKER_SOCKET, DOCKER_API_VERSION } from './driver.js';
import { buildBusyboxImage, type BusyboxImageOptions } from './test-image.js';
import { LABEL_SPACE, imageRepoPrefix, networkName } from './names.js';
import type { ContainerSpec, DockerDriver } from './types.js';
import { requireHost } from '../require-host.js';

export const MiB = 1024 * 1024;
export const CGROUP_ROOT = '/sys/fs/cgroup';

/** The tests' dockerd; OCS_DOCKER_SOCKET points them elsewhere (the require-host test uses a dead one). */
const SOCKET = process.env.OCS_DOCKER_SOCKET ?? DEFAULT_DOCKER_SOCKET;
export const docker = new Dockerode({ socketPath: SOCKET, version: DOCKER_API_VERSION });

/** `false`, or why the Docker tests are skipped; under OCS_REQUIRE_HOST=1 a reason throws instead. */
export async function dockerSkip(): Promise<false | string> {
  return requireHost('dockerd', await dockerUnavailable());
}

async function dockerUnavailable(): Promise<false | string> {
  try {
    await docker.ping();
  } catch (err) {
    return `dockerd is not reachable at ${SOCKET} (${(err as Error).message}); start it with scripts/start-services.sh`;
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

/** Removes every container, the network and the image names of these spaces, directly through dockerode. */
export async function cleanupSpaces(spaceIds: string[]): Promise<void> {
  for (const spaceId of spaceIds) {
    const containers = await docker.listContainers({ all: true, filters: { label: [`${LABEL_SPACE}=${spaceId}`] } });
    for (const c of containers)
      await docker
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined);
    const nets = await docker.listNetworks({ filters: { label: [`${LABEL_SPACE}=${spaceId}`] } });
    for (const n of nets)
      if (n.Name === networkName(spaceId))
        await docker
          .getNetwork(n.Id)
          .remove()
          .catch(() => undefined);
    const images = await docker.listImages({ filters: { reference: [`${imageRepoPrefix(spaceId)}*`] } });
    for (const img of images) {
      for (const tag of img.RepoTags ?? []) {
        if (tag.startsWith(imageRepoPrefix(spaceId)))
          await docker
            .getImage(tag)
            .remove({ force: true })
            .catch(() => undefined);
      }
    }
  }
}

/**
 * A cgroup tree of the test's own (`/ocs-test-<random>`), with a `<spaceId>/workloads` parent
 * per space created in the memory hierarchy (runc creates the rest). `remove()` deletes the
 * tree bottom-up in every hierarchy, after the containers are gone.
 */
export function testCgroups() {
  const root = `/ocs-test-${base32(8)}`;
  const v1 = existsSync(join(CGROUP_ROOT, 'memory'));
  return {
    root,
    parentFor(spaceId: string): string {
      const parent = `${root}/${spaceId}/workloads`;
      mkdirSync(v1 ? join(CGROUP_ROOT, 'memory', parent) : join(CGROUP_ROOT, parent), { recursive: true });
      return parent;
    },
    remove(): void {
      const hierarchies = v1 ? readdirSync(CGROUP_ROOT).map((c) => join(CGROUP_ROOT, c)) : [CGROUP_ROOT];
      for (const h of hierarchies) {
        const top = join(h, root);
        if (existsSync(top)) removeTree(top);
      }
    },
  };
}

function removeTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  rmdirSync(dir);
}

/** Builds the busybox tarball (by default under a unique temporary tag); returns its path and a cleanup. */
export async function busyboxTarball(
  opts: BusyboxImageOptions & { tag?: string } = {},
): Promise<{ path: string; remove(): void }> {
  const path = await buildBusyboxImage(opts.tag ?? `ocs-test-tmp/busybox-${base32(10)}:latest`, opts);
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
  driver: DockerDriver,
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
