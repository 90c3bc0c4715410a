/**
 * The container driver: the only code that talks to a space's container engine (the space's own
 * podman, through its Docker-compatible API and, for creates and networks, its own). See
 * {@link ContainerDriver}.
 *
 * The folder is `podman/`, not `docker/`: what it drives is podman, and it leans on podman's own
 * API (libpod) for creates and networks, so no dockerd could stand in for it. dockerode is only
 * the HTTP client. The interface is `ContainerDriver`, named for what the broker asks of it.
 */
import Dockerode from 'dockerode';
import type { DriverContext } from './context.js';
import { KeyedLock } from '../keyed-lock.js';
import {
  containerLogs,
  containerStats,
  createContainer,
  inspectContainer,
  listContainers,
  removeContainer,
  startContainer,
  stopContainer,
} from './containers.js';
import { listImages, loadImage, removeImage } from './images.js';
import type { ContainerDriver, ContainerDriverOptions } from './types.js';

/** The Docker API version we speak: what podman 4.3's compatible API (and docker.io 20.10) offers. */
export const DOCKER_API_VERSION = 'v1.41';
/** The libpod API version asked of podman (Debian 12 ships 4.3). */
export const LIBPOD_API_VERSION = 'v4.0.0';
export const DEFAULT_MAX_IMAGE_BYTES = 16 * 1024 ** 3;

/**
 * Creates the driver for one space's engine (`SpaceEngines.driver` makes it). It connects
 * lazily: nothing is sent until the first call, and an engine that does not answer makes each
 * call fail with `unavailable`.
 */
export function createContainerDriver(opts: ContainerDriverOptions): ContainerDriver {
  const lock = new KeyedLock();
  const ctx: DriverContext = {
    // An explicit socket path: dockerode would otherwise honour DOCKER_HOST from the environment.
    docker: new Dockerode({ socketPath: opts.socketPath, version: DOCKER_API_VERSION }),
    tmpDir: opts.tmpDir,
    maxImageBytes: opts.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES,
    cgroupRoot: opts.cgroupRoot ?? '/sys/fs/cgroup',
    podman: {
      idMap: opts.podman.idMap,
      subnet: opts.podman.subnet,
      networksDir: opts.podman.networksDir,
      libpod: new Dockerode({ socketPath: opts.socketPath, version: LIBPOD_API_VERSION }),
    },
    // The broker may run requests of one space at once; image names are checked, then set, which
    // must not interleave (a second load would silently re-point the name and orphan the first image).
    serialize: (key, fn) => lock.run(key, fn),
  };

  return {
    loadImage: (spaceId, name, tar, options) => loadImage(ctx, spaceId, name, tar, options),
    listImages: (spaceId) => listImages(ctx, spaceId),
    removeImage: (spaceId, name) => removeImage(ctx, spaceId, name),
    create: (spec) => createContainer(ctx, spec),
    start: (spaceId, containerId) => startContainer(ctx, spaceId, containerId),
    stop: (spaceId, containerId, timeoutSeconds) => stopContainer(ctx, spaceId, containerId, timeoutSeconds),
    remove: (spaceId, containerId) => removeContainer(ctx, spaceId, containerId),
    inspect: (spaceId, containerId) => inspectContainer(ctx, spaceId, containerId),
    list: (spaceId) => listContainers(ctx, spaceId),
    logs: (spaceId, containerId, o) => containerLogs(ctx, spaceId, containerId, o),
    stats: (spaceId, containerId) => containerStats(ctx, spaceId, containerId),
  };
}
