/**
 * The route catalogue of both APIs: one source for the servers (which bind handlers to these
 * entries and validate with their schemas), the client, and docs/api/openapi.json.
 */
import type { TSchema } from '@sinclair/typebox';
import { Empty, ErrorResponse, Resources } from './schemas/common.js';
import * as N from './schemas/node.js';
import * as S from './schemas/space.js';

import type { Role } from './jwt.js';

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

export interface RouteSpec {
  /** OpenAPI operationId; also the handler's name on the server. */
  id: string;
  method: HttpMethod;
  /** OpenAPI-style path with {params}. Space API paths are relative to the space's apiBase. */
  path: string;
  summary: string;
  /** A JWT with any one of these roles is required; `[]` means no token (health, metrics). */
  roles: readonly Role[];
  /**
   * `owner`: the request must also carry an RFC 9421 signature by the resource's owner key.
   * `bound-key`: signed by the key being bound in the body (proof of possession).
   * `owner-or-farmer`: either an owner signature, or a token with role farmer.
   */
  signature: 'none' | 'owner' | 'bound-key' | 'owner-or-farmer';
  body?: TSchema | 'binary';
  response?: TSchema | 'text' | 'binary';
  status: number;
}

export const NODE_ROUTES = [
  {
    id: 'health',
    method: 'GET',
    path: '/healthz',
    summary: 'Liveness',
    roles: [],
    signature: 'none',
    response: N.Health,
    status: 200,
  },
  {
    id: 'metrics',
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus metrics',
    roles: [],
    signature: 'none',
    response: 'text',
    status: 200,
  },
  {
    id: 'getNode',
    method: 'GET',
    path: '/v1/node',
    summary: 'Identity, TLS fingerprint, unlock recipient and capacity',
    roles: ['farmer', 'spaces', 'monitor'],
    signature: 'none',
    response: N.NodeInfo,
    status: 200,
  },
  {
    id: 'createSpace',
    method: 'POST',
    path: '/v1/spaces',
    summary: 'Reserve a space bound to an owner key',
    roles: ['spaces'],
    signature: 'bound-key',
    body: N.CreateSpaceRequest,
    response: N.CreateSpaceResponse,
    status: 201,
  },
  {
    id: 'listSpaces',
    method: 'GET',
    path: '/v1/spaces',
    summary: "Spaces of the caller's org (all for farmer and monitor)",
    roles: ['spaces', 'farmer', 'monitor'],
    signature: 'none',
    response: N.SpaceList,
    status: 200,
  },
  {
    id: 'getSpace',
    method: 'GET',
    path: '/v1/spaces/{spaceId}',
    summary: 'One space',
    roles: ['spaces', 'farmer', 'monitor'],
    signature: 'none',
    response: N.Space,
    status: 200,
  },
  {
    id: 'renewSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/renew',
    summary: 'Extend the lease (never shortens it)',
    roles: ['spaces', 'farmer'],
    signature: 'owner-or-farmer',
    body: N.RenewRequest,
    response: N.Space,
    status: 200,
  },
  {
    id: 'lockSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/lock',
    summary: 'Stop workloads and evict the storage key',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: Empty,
    response: N.Space,
    status: 200,
  },
  {
    id: 'unlockSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/unlock',
    summary: 'Load the space key, sealed to the node unlock recipient',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: N.UnlockRequest,
    response: N.Space,
    status: 200,
  },
  {
    id: 'rotateSpaceKey',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/rotate-key',
    summary: 'Re-wrap the storage under a fresh key',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: N.RotateKeyRequest,
    response: N.RotateKeyResponse,
    status: 200,
  },
  {
    id: 'deleteSpace',
    method: 'DELETE',
    path: '/v1/spaces/{spaceId}',
    summary: 'Destroy the space and shred its keys',
    roles: ['spaces', 'farmer'],
    signature: 'owner-or-farmer',
    status: 204,
  },
  {
    id: 'listAudit',
    method: 'GET',
    path: '/v1/audit',
    summary: 'The hash-chained audit log',
    roles: ['farmer', 'monitor'],
    signature: 'none',
    response: N.AuditPage,
    status: 200,
  },
] as const satisfies readonly RouteSpec[];

export const SPACE_ROUTES = [
  {
    id: 'spaceStatus',
    method: 'GET',
    path: '/status',
    summary: 'Budget and usage',
    roles: ['monitor', 'storage', 'containers', 'vms'],
    signature: 'owner',
    response: S.SpaceStatus,
    status: 200,
  },
  {
    id: 'createVolume',
    method: 'POST',
    path: '/volumes',
    summary: 'Create an encrypted volume',
    roles: ['storage'],
    signature: 'owner',
    body: S.CreateVolumeRequest,
    response: S.Volume,
    status: 201,
  },
  {
    id: 'listVolumes',
    method: 'GET',
    path: '/volumes',
    summary: 'Volumes',
    roles: ['storage', 'monitor'],
    signature: 'owner',
    response: S.VolumeList,
    status: 200,
  },
  {
    id: 'deleteVolume',
    method: 'DELETE',
    path: '/volumes/{volume}',
    summary: 'Destroy a volume and its key',
    roles: ['storage'],
    signature: 'owner',
    status: 204,
  },
  {
    id: 'loadImage',
    method: 'POST',
    path: '/images/{image}',
    summary: 'Load a docker save tarball (streamed, with Content-Digest)',
    roles: ['storage', 'containers'],
    signature: 'owner',
    body: 'binary',
    response: S.Image,
    status: 201,
  },
  {
    id: 'listImages',
    method: 'GET',
    path: '/images',
    summary: 'Images of this space',
    roles: ['storage', 'containers', 'monitor'],
    signature: 'owner',
    response: S.ImageList,
    status: 200,
  },
  {
    id: 'deleteImage',
    method: 'DELETE',
    path: '/images/{image}',
    summary: 'Remove an image',
    roles: ['storage', 'containers'],
    signature: 'owner',
    status: 204,
  },
  {
    id: 'uploadFile',
    method: 'POST',
    path: '/files/{file}',
    summary: 'Upload a file (kernel, initramfs, disk image, image tarball) into the space storage',
    roles: ['storage', 'containers', 'vms'],
    signature: 'owner',
    body: 'binary',
    response: S.StoredFile,
    status: 201,
  },
  {
    id: 'listFiles',
    method: 'GET',
    path: '/files',
    summary: 'Uploaded files',
    roles: ['storage', 'containers', 'vms', 'monitor'],
    signature: 'owner',
    response: S.FileList,
    status: 200,
  },
  {
    id: 'deleteFile',
    method: 'DELETE',
    path: '/files/{file}',
    summary: 'Delete an uploaded file',
    roles: ['storage', 'containers', 'vms'],
    signature: 'owner',
    status: 204,
  },
  {
    id: 'createContainer',
    method: 'POST',
    path: '/containers',
    summary: 'Create (and start) a hardened container',
    roles: ['containers'],
    signature: 'owner',
    body: S.CreateContainerRequest,
    response: S.Container,
    status: 201,
  },
  {
    id: 'listContainers',
    method: 'GET',
    path: '/containers',
    summary: 'Containers',
    roles: ['containers', 'monitor'],
    signature: 'owner',
    response: S.ContainerList,
    status: 200,
  },
  {
    id: 'getContainer',
    method: 'GET',
    path: '/containers/{container}',
    summary: 'Inspect a container',
    roles: ['containers', 'monitor'],
    signature: 'owner',
    response: S.Container,
    status: 200,
  },
  {
    id: 'startContainer',
    method: 'POST',
    path: '/containers/{container}/start',
    summary: 'Start',
    roles: ['containers'],
    signature: 'owner',
    body: Empty,
    response: S.Container,
    status: 200,
  },
  {
    id: 'stopContainer',
    method: 'POST',
    path: '/containers/{container}/stop',
    summary: 'Stop',
    roles: ['containers'],
    signature: 'owner',
    body: Empty,
    response: S.Container,
    status: 200,
  },
  {
    id: 'deleteContainer',
    method: 'DELETE',
    path: '/containers/{container}',
    summary: 'Remove',
    roles: ['containers'],
    signature: 'owner',
    status: 204,
  },
  {
    id: 'containerLogs',
    method: 'GET',
    path: '/containers/{container}/logs',
    summary: 'Tail of stdout and stderr',
    roles: ['containers', 'monitor'],
    signature: 'owner',
    response: S.LogChunk,
    status: 200,
  },
  {
    id: 'containerStats',
    method: 'GET',
    path: '/containers/{container}/stats',
    summary: 'Memory, CPU and pids',
    roles: ['containers', 'monitor'],
    signature: 'owner',
    response: S.ContainerStats,
    status: 200,
  },
  {
    id: 'createVm',
    method: 'POST',
    path: '/vms',
    summary: 'Define (and start) a VM',
    roles: ['vms'],
    signature: 'owner',
    body: S.CreateVmRequest,
    response: S.Vm,
    status: 201,
  },
  {
    id: 'listVms',
    method: 'GET',
    path: '/vms',
    summary: 'VMs',
    roles: ['vms', 'monitor'],
    signature: 'owner',
    response: S.VmList,
    status: 200,
  },
  {
    id: 'getVm',
    method: 'GET',
    path: '/vms/{vm}',
    summary: 'One VM',
    roles: ['vms', 'monitor'],
    signature: 'owner',
    response: S.Vm,
    status: 200,
  },
  {
    id: 'startVm',
    method: 'POST',
    path: '/vms/{vm}/start',
    summary: 'Start',
    roles: ['vms'],
    signature: 'owner',
    body: Empty,
    response: S.Vm,
    status: 200,
  },
  {
    id: 'stopVm',
    method: 'POST',
    path: '/vms/{vm}/stop',
    summary: 'Stop (force off after a grace period)',
    roles: ['vms'],
    signature: 'owner',
    body: Empty,
    response: S.Vm,
    status: 200,
  },
  {
    id: 'deleteVm',
    method: 'DELETE',
    path: '/vms/{vm}',
    summary: 'Undefine and delete its disk',
    roles: ['vms'],
    signature: 'owner',
    status: 204,
  },
  {
    id: 'vmConsole',
    method: 'GET',
    path: '/vms/{vm}/console',
    summary: 'Serial console log (read-only)',
    roles: ['vms', 'monitor'],
    signature: 'owner',
    response: S.LogChunk,
    status: 200,
  },
] as const satisfies readonly RouteSpec[];

export const SPACE_API_PREFIX = '/v1/spaces/{spaceId}/api';

function isSchema(v: unknown): v is TSchema {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && ('type' in v || 'anyOf' in v);
}

/** Named schemas for docs/api/openapi.json components. */
export const NAMED_SCHEMAS: Record<string, TSchema> = Object.fromEntries(
  Object.entries({ ErrorResponse, Resources, Empty, ...N, ...S } as Record<string, unknown>).filter(
    (e): e is [string, TSchema] => isSchema(e[1]),
  ),
);
