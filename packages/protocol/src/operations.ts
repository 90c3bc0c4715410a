/**
 * The catalogue of a space's operations: each declared once, with its route on the space API (if
 * it has one), its arguments on the broker (if it reaches the host), whether it is read-only, its
 * kind, and the part of the host that can fail under it. `SPACE_ROUTES` (routes.ts) and
 * `BROKER_OPS` (broker.ts) are views of this table; the space process binds every route from it,
 * forwarding to the broker op of the same entry unless it has a handler of its own (uploads, files).
 */
import { Type, type TComposite, type TObject, type TSchema } from '@sinclair/typebox';
import { OcsError } from './errors.js';
import { Empty, Name, Obj } from './schemas/common.js';
import * as S from './schemas/space.js';
import { IssuerKeySets } from './schemas/space-process.js';
import type { RouteSpec } from './routes.js';

/** What an operation acts on. */
export type OperationKind = 'space' | 'volume' | 'image' | 'container' | 'vm' | 'network' | 'file';
/**
 * The part of the host an operation's unexpected failure is blamed on (`host_failed` names it):
 * `engine` the container engine, `libvirt` libvirt/QEMU, `storage` the space's storage,
 * `firewall` the node's nftables, `host` anything else.
 */
export type HostPart = 'engine' | 'libvirt' | 'storage' | 'firewall' | 'host';

/** How `host_failed` names each part of the host. */
const PART_NAMES: Record<HostPart, string> = {
  engine: 'the container engine',
  libvirt: 'libvirt/QEMU',
  storage: 'the storage',
  firewall: "the node's firewall",
  host: 'the host',
};

/**
 * A host failure the caller cannot fix (502), named by the part of the host its operation
 * declares; the detail goes to the node's log, never to the caller.
 */
export function hostFailed(op: string, part: HostPart): OcsError {
  return new OcsError('host_failed', `${PART_NAMES[part]} failed to carry out ${op}; the node's log has the detail`, {
    op,
  });
}

/** A route's checked input, as the space process has it when it maps it to broker arguments. */
export interface RouteInput {
  params: Record<string, string>;
  query: Record<string, number | undefined>;
  body: unknown;
}

export interface OperationSpec {
  /** Changes nothing: its route is a GET, the space process does not journal it, the broker audits it only when refused. */
  readOnly: boolean;
  kind: OperationKind;
  part: HostPart;
  /** Its route on the space API, relative to the space's apiBase; `id` defaults to the operation's name. */
  route?: Omit<RouteSpec, 'id'> & { id?: string };
  /**
   * Its broker operation (named as the entry). `'route'`: its arguments are exactly the route's
   * input, path parameters and body merged in one closed object (most operations), and its result
   * the route's response. Otherwise the arguments the broker validates, its result (the route's
   * response unless given), and how the route's input maps to the arguments (path parameters and
   * body merged unless `from` says otherwise).
   */
  broker?: 'route' | { args: TSchema; result?: TSchema; from?: (input: RouteInput) => unknown };
}

const Ref = <K extends string>(key: K) => Obj({ [key]: Name } as { [P in K]: typeof Name });
const TailQuery = (t: { max: number; default: number }, unit: string) =>
  Obj({
    tail: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: t.max,
        description: `How many ${unit} from the end (default ${t.default}).`,
      }),
    ),
  });
const TailArgs = <K extends string>(key: K, max: number) =>
  Obj({ [key]: Name, tail: Type.Integer({ minimum: 1, maximum: max }) } as {
    [P in K]: typeof Name;
  } & { tail: ReturnType<typeof Type.Integer> });

/** An upload still in its spool name (see the space API's uploads): never a valid owner name. */
export const SpoolName = Type.String({ pattern: '^\\.upload-[0-9a-f]{16}$' });

export const SPACE_OPERATIONS = {
  status: {
    readOnly: true,
    kind: 'space',
    part: 'host',
    route: {
      id: 'spaceStatus',
      method: 'GET',
      path: '/status',
      summary: 'Budget and usage',
      roles: ['monitor', 'storage', 'containers', 'vms'],
      signature: 'owner',
      response: S.SpaceStatus,
      status: 200,
    },
    broker: 'route',
  },
  createVolume: {
    readOnly: false,
    kind: 'volume',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/volumes',
      summary: 'Create an encrypted volume',
      roles: ['storage'],
      signature: 'owner',
      body: S.CreateVolumeRequest,
      response: S.Volume,
      status: 201,
      errors: ['budget_exceeded', 'conflict'],
    },
    broker: 'route',
  },
  listVolumes: {
    readOnly: true,
    kind: 'volume',
    part: 'storage',
    route: {
      method: 'GET',
      path: '/volumes',
      summary: 'Volumes',
      roles: ['storage', 'monitor'],
      signature: 'owner',
      response: S.VolumeList,
      status: 200,
    },
    broker: 'route',
  },
  deleteVolume: {
    readOnly: false,
    kind: 'volume',
    part: 'storage',
    route: {
      method: 'DELETE',
      path: '/volumes/{volume}',
      params: Ref('volume'),
      summary: 'Destroy a volume and its key',
      roles: ['storage'],
      signature: 'owner',
      status: 204,
      errors: ['conflict'],
    },
    broker: 'route',
  },
  loadImage: {
    readOnly: false,
    kind: 'image',
    part: 'engine',
    route: {
      method: 'POST',
      path: '/images/{image}',
      params: Ref('image'),
      summary: 'Load a docker save tarball (streamed, with Content-Digest)',
      roles: ['storage', 'containers'],
      signature: 'owner',
      body: 'binary',
      response: S.Image,
      status: 201,
      errors: ['budget_exceeded', 'conflict', 'unsupported_media_type'],
    },
    /** `file` names an uploaded file in the space's storage: the `docker save` tarball (the space process spools the upload and passes its name). */
    broker: { args: Obj({ image: Name, file: Type.Union([Name, SpoolName]) }) },
  },
  listImages: {
    readOnly: true,
    kind: 'image',
    part: 'engine',
    route: {
      method: 'GET',
      path: '/images',
      summary: 'Images of this space',
      roles: ['storage', 'containers', 'monitor'],
      signature: 'owner',
      response: S.ImageList,
      status: 200,
    },
    broker: 'route',
  },
  deleteImage: {
    readOnly: false,
    kind: 'image',
    part: 'engine',
    route: {
      method: 'DELETE',
      path: '/images/{image}',
      params: Ref('image'),
      summary: 'Remove an image',
      roles: ['storage', 'containers'],
      signature: 'owner',
      status: 204,
      errors: ['conflict'],
    },
    broker: 'route',
  },
  uploadFile: {
    readOnly: false,
    kind: 'file',
    part: 'storage',
    route: {
      method: 'POST',
      path: '/files/{file}',
      params: Ref('file'),
      summary: 'Upload a file (kernel, initramfs, disk image, image tarball) into the space storage',
      roles: ['storage', 'containers', 'vms'],
      signature: 'owner',
      body: 'binary',
      response: S.StoredFile,
      status: 201,
      errors: ['budget_exceeded', 'conflict'],
    },
  },
  listFiles: {
    readOnly: true,
    kind: 'file',
    part: 'storage',
    route: {
      method: 'GET',
      path: '/files',
      summary: 'Uploaded files',
      roles: ['storage', 'containers', 'vms', 'monitor'],
      signature: 'owner',
      response: S.FileList,
      status: 200,
    },
  },
  deleteFile: {
    readOnly: false,
    kind: 'file',
    part: 'storage',
    route: {
      method: 'DELETE',
      path: '/files/{file}',
      params: Ref('file'),
      summary: 'Delete an uploaded file',
      roles: ['storage', 'containers', 'vms'],
      signature: 'owner',
      status: 204,
    },
  },
  createContainer: {
    readOnly: false,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'POST',
      path: '/containers',
      summary: 'Create (and start) a hardened container',
      roles: ['containers'],
      signature: 'owner',
      body: S.CreateContainerRequest,
      response: S.Container,
      status: 201,
      errors: ['budget_exceeded', 'conflict'],
    },
    broker: 'route',
  },
  listContainers: {
    readOnly: true,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'GET',
      path: '/containers',
      summary: 'Containers',
      roles: ['containers', 'monitor'],
      signature: 'owner',
      response: S.ContainerList,
      status: 200,
    },
    broker: 'route',
  },
  getContainer: {
    readOnly: true,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'GET',
      path: '/containers/{container}',
      params: Ref('container'),
      summary: 'Inspect a container',
      roles: ['containers', 'monitor'],
      signature: 'owner',
      response: S.Container,
      status: 200,
    },
    broker: 'route',
  },
  startContainer: {
    readOnly: false,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'POST',
      path: '/containers/{container}/start',
      params: Ref('container'),
      summary: 'Start',
      roles: ['containers'],
      signature: 'owner',
      body: Empty,
      response: S.Container,
      status: 200,
    },
    broker: 'route',
  },
  stopContainer: {
    readOnly: false,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'POST',
      path: '/containers/{container}/stop',
      params: Ref('container'),
      summary: 'Stop',
      roles: ['containers'],
      signature: 'owner',
      body: Empty,
      response: S.Container,
      status: 200,
    },
    broker: 'route',
  },
  deleteContainer: {
    readOnly: false,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'DELETE',
      path: '/containers/{container}',
      params: Ref('container'),
      summary: 'Remove',
      roles: ['containers'],
      signature: 'owner',
      status: 204,
    },
    broker: 'route',
  },
  containerLogs: {
    readOnly: true,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'GET',
      path: '/containers/{container}/logs',
      params: Ref('container'),
      query: TailQuery(S.LOG_TAIL, 'lines'),
      summary: 'Tail of stdout and stderr',
      roles: ['containers', 'monitor'],
      signature: 'owner',
      response: S.LogChunk,
      status: 200,
    },
    broker: {
      args: TailArgs('container', S.LOG_TAIL.max),
      from: ({ params, query }) => ({ ...params, tail: query.tail ?? S.LOG_TAIL.default }),
    },
  },
  containerStats: {
    readOnly: true,
    kind: 'container',
    part: 'engine',
    route: {
      method: 'GET',
      path: '/containers/{container}/stats',
      params: Ref('container'),
      summary: 'Memory, CPU and pids',
      roles: ['containers', 'monitor'],
      signature: 'owner',
      response: S.ContainerStats,
      status: 200,
    },
    broker: 'route',
  },
  createVm: {
    readOnly: false,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'POST',
      path: '/vms',
      summary: 'Define (and start) a VM',
      roles: ['vms'],
      signature: 'owner',
      body: S.CreateVmRequest,
      response: S.Vm,
      status: 201,
      errors: ['budget_exceeded', 'conflict'],
    },
    broker: 'route',
  },
  listVms: {
    readOnly: true,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'GET',
      path: '/vms',
      summary: 'VMs',
      roles: ['vms', 'monitor'],
      signature: 'owner',
      response: S.VmList,
      status: 200,
    },
    broker: 'route',
  },
  getVm: {
    readOnly: true,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'GET',
      path: '/vms/{vm}',
      params: Ref('vm'),
      summary: 'One VM',
      roles: ['vms', 'monitor'],
      signature: 'owner',
      response: S.Vm,
      status: 200,
    },
    broker: 'route',
  },
  startVm: {
    readOnly: false,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'POST',
      path: '/vms/{vm}/start',
      params: Ref('vm'),
      summary: 'Start',
      roles: ['vms'],
      signature: 'owner',
      body: Empty,
      response: S.Vm,
      status: 200,
    },
    broker: 'route',
  },
  stopVm: {
    readOnly: false,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'POST',
      path: '/vms/{vm}/stop',
      params: Ref('vm'),
      summary: 'Stop (force off after a grace period)',
      roles: ['vms'],
      signature: 'owner',
      body: Empty,
      response: S.Vm,
      status: 200,
    },
    broker: 'route',
  },
  deleteVm: {
    readOnly: false,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'DELETE',
      path: '/vms/{vm}',
      params: Ref('vm'),
      summary: 'Undefine and delete its disk',
      roles: ['vms'],
      signature: 'owner',
      status: 204,
    },
    broker: 'route',
  },
  vmConsole: {
    readOnly: true,
    kind: 'vm',
    part: 'libvirt',
    route: {
      method: 'GET',
      path: '/vms/{vm}/console',
      params: Ref('vm'),
      query: TailQuery(S.CONSOLE_TAIL, 'bytes'),
      summary: 'Serial console log (read-only)',
      roles: ['vms', 'monitor'],
      signature: 'owner',
      response: S.LogChunk,
      status: 200,
    },
    broker: {
      args: TailArgs('vm', S.CONSOLE_TAIL.max),
      from: ({ params, query }) => ({ ...params, tail: query.tail ?? S.CONSOLE_TAIL.default }),
    },
  },
  getNetwork: {
    readOnly: true,
    kind: 'network',
    part: 'firewall',
    route: {
      method: 'GET',
      path: '/network',
      summary: "The space's network: its egress, what it publishes where, its reserved ports",
      roles: ['containers', 'vms', 'monitor'],
      signature: 'owner',
      response: S.SpaceNetworkView,
      status: 200,
    },
    broker: 'route',
  },
  setEgress: {
    readOnly: false,
    kind: 'network',
    part: 'firewall',
    route: {
      method: 'POST',
      path: '/network/egress',
      summary: "Where the space's workloads may reach out, within the node's policy (default: nowhere)",
      roles: ['containers', 'vms'],
      signature: 'owner',
      body: S.Egress,
      response: S.SpaceNetworkView,
      status: 200,
      errors: ['egress_refused'],
    },
    broker: {
      args: Obj({ egress: S.Egress }),
      from: ({ body }) => ({ egress: body }),
    },
  },
  publishPort: {
    readOnly: false,
    kind: 'network',
    part: 'firewall',
    route: {
      method: 'POST',
      path: '/network/ports',
      summary: "Forward a port of the node (from the space's reserved ports) to a container's or VM's port",
      roles: ['containers', 'vms'],
      signature: 'owner',
      body: S.PublishPortRequest,
      response: S.PublishedPort,
      status: 201,
      errors: ['budget_exceeded', 'capacity_exceeded', 'conflict'],
    },
    broker: 'route',
  },
  unpublishPort: {
    readOnly: false,
    kind: 'network',
    part: 'firewall',
    route: {
      method: 'DELETE',
      path: '/network/ports/{hostPort}',
      params: Obj({ hostPort: Type.String({ pattern: '^[1-9][0-9]{0,4}$' }) }),
      summary: 'Stop forwarding a port of the node',
      roles: ['containers', 'vms'],
      signature: 'owner',
      status: 204,
    },
    broker: {
      args: Obj({ hostPort: Type.Integer({ minimum: 1, maximum: 65_535 }) }),
      from: ({ params }) => ({ hostPort: Number(params.hostPort) }),
    },
  },
  /**
   * The keys of the issuers the daemon fetches from the network: the space process has no
   * network, and asks here when its copy is old or a token names a `kid` it lacks.
   */
  issuerKeys: {
    readOnly: true,
    kind: 'space',
    part: 'host',
    broker: { args: Empty, result: IssuerKeySets },
  },
} as const satisfies Record<string, OperationSpec>;

type Ops = typeof SPACE_OPERATIONS;
export type OperationName = keyof Ops;

/** An entry's route spec: its `route`, under the entry's name unless the route names itself. */
type RouteOfEntry<K extends string, E> = E extends { route: infer R }
  ? R extends { id: string }
    ? R
    : R & { id: K }
  : never;
/** Every route of the space API, typed from its entry. */
export type SpaceRouteOf = { [K in OperationName]: RouteOfEntry<K, Ops[K]> }[OperationName];

/** The routes the space process answers itself: their entries have no broker op. */
export type LocalRouteId = {
  [K in OperationName]: Ops[K] extends { broker: unknown } ? never : RouteOfEntry<K, Ops[K]>['id'];
}[OperationName];

/** A route's input as one closed object: its path parameters and its body merged. */
type ArgsOfRoute<R> = R extends { params: infer P extends TObject }
  ? R extends { body: infer B extends TObject }
    ? TComposite<[P, B]>
    : P
  : R extends { body: infer B extends TObject }
    ? B
    : typeof Empty;
type ArgsOfEntry<E> = E extends { broker: { args: infer A } }
  ? A
  : E extends { route: infer R }
    ? ArgsOfRoute<R>
    : never;
type ResultOfEntry<E> = E extends { broker: { result: infer R } }
  ? R
  : E extends { route: { response: infer R extends TSchema } }
    ? R
    : typeof Empty;
type BrokerOfEntry<E extends OperationSpec> = {
  args: ArgsOfEntry<E>;
  result: ResultOfEntry<E>;
  readOnly: E['readOnly'];
  kind: E['kind'];
  part: E['part'];
};
/** Every broker operation, typed from its entry. */
export type BrokerOps = {
  [K in OperationName as Ops[K] extends { broker: unknown } ? K : never]: BrokerOfEntry<Ops[K]>;
};

const entries = Object.entries(SPACE_OPERATIONS as Record<string, OperationSpec>);

export const spaceRoutesOf = (): readonly SpaceRouteOf[] =>
  entries.flatMap(([name, o]) => (o.route ? [{ id: name, ...o.route } as SpaceRouteOf] : []));

/** The schema of a route's input as one closed object (`broker: 'route'`). */
function argsOfRoute(name: string, route: OperationSpec['route']): TSchema {
  if (!route) throw new Error(`${name}: broker 'route' needs a route`);
  const parts = [route.params, typeof route.body === 'object' ? route.body : undefined].filter(
    (p): p is TObject => p !== undefined,
  );
  if (route.body === 'binary') throw new Error(`${name}: a streamed body cannot be broker arguments`);
  if (parts.length === 0) return Empty;
  return parts.length === 1 ? parts[0]! : Type.Composite(parts, { additionalProperties: false });
}

export const brokerOpsOf = (): BrokerOps =>
  Object.fromEntries(
    entries.flatMap(([name, o]) =>
      o.broker
        ? [
            [
              name,
              {
                args: o.broker === 'route' ? argsOfRoute(name, o.route) : o.broker.args,
                result:
                  (o.broker !== 'route' ? o.broker.result : undefined) ??
                  (typeof o.route?.response === 'object' ? o.route.response : Empty),
                readOnly: o.readOnly,
                kind: o.kind,
                part: o.part,
              },
            ],
          ]
        : [],
    ),
  ) as BrokerOps;

const byRoute = new Map(entries.flatMap(([name, o]) => (o.route ? [[o.route.id ?? name, { name, ...o }]] : [])));

/** The operation a space route belongs to. */
export function operationOfRoute(routeId: string): (OperationSpec & { name: string }) | undefined {
  return byRoute.get(routeId);
}

/** The broker arguments a route's checked input maps to. */
export function brokerArgsOf(op: OperationSpec, input: RouteInput): unknown {
  if (typeof op.broker === 'object' && op.broker.from) return op.broker.from(input);
  return { ...input.params, ...(typeof input.body === 'object' && input.body !== null ? input.body : {}) };
}
