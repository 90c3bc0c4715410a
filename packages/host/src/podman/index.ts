/**
 * The container driver: per-space images, networks and hardened containers in the space's own
 * podman engine (see `SpaceEngines`).
 */
export type {
  ContainerLogs,
  ContainerMount,
  ContainerSpec,
  ContainerStatsSample,
  ContainerStatus,
  ContainerSummary,
  ContainerDriver,
  ContainerDriverOptions,
  LoadImageOptions,
  SpaceImage,
} from './types.js';
export { createContainerDriver, DEFAULT_MAX_IMAGE_BYTES, DOCKER_API_VERSION } from './driver.js';
export {
  CONTAINER_BOUNDS,
  FORBIDDEN_SOURCE_TREES,
  buildLibpodSpec,
  normalizeCapabilities,
  validateSpec,
} from './hardening.js';
export {
  LABEL_CONTAINER,
  LABEL_IMAGE,
  LABEL_NAME,
  LABEL_SPACE,
  bridgeName,
  containerName,
  imageRef,
  networkName,
} from './names.js';
export { spaceSubnet, VM_ADDRESSES, type SpaceSubnet } from './network-conflist.js';
