/** Bodies of a space's owner-only API (`/v1/spaces/{id}/api/...`). */
import { Type, type Static } from '@sinclair/typebox';
import { ContainerId, MiB, Name, Obj, Resources, SpaceId, Timestamp, VmId, VolumeId } from './common.js';

export const SpaceStatus = Obj(
  {
    spaceId: SpaceId,
    resources: Resources,
    used: Obj({
      cpuMillicores: Type.Integer(),
      memoryBytes: Type.Integer(),
      storageBytes: Type.Integer(),
      pids: Type.Integer(),
    }),
    volumes: Type.Integer(),
    containers: Type.Integer(),
    vms: Type.Integer(),
  },
  {},
);
export type SpaceStatus = Static<typeof SpaceStatus>;

export const CreateVolumeRequest = Obj({ name: Name, sizeBytes: Type.Integer({ minimum: 16 * MiB }) }, {});
export type CreateVolumeRequest = Static<typeof CreateVolumeRequest>;

export const Volume = Obj(
  { id: VolumeId, name: Name, sizeBytes: Type.Integer(), createdAt: Timestamp, unlocked: Type.Boolean() },
  {},
);
export type Volume = Static<typeof Volume>;
export const VolumeList = Obj({ volumes: Type.Array(Volume) });

export const Image = Obj(
  {
    name: Name,
    tag: Type.String(),
    dockerId: Type.String(),
    sizeBytes: Type.Integer(),
    loadedAt: Timestamp,
  },
  {},
);
export type Image = Static<typeof Image>;
export const ImageList = Obj({ images: Type.Array(Image) });

const EnvName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' });
/** Capabilities an owner may add back after `CapDrop: ALL`: none that reach outside the container. */
export const ALLOWED_CAPABILITIES = [
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'NET_BIND_SERVICE',
  'SETGID',
  'SETUID',
] as const;

export const CreateContainerRequest = Obj(
  {
    name: Name,
    image: Name,
    command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
    env: Type.Optional(Type.Record(EnvName, Type.String({ maxLength: 32768 }), { maxProperties: 256 })),
    cpuMillicores: Type.Integer({ minimum: 10 }),
    memoryBytes: Type.Integer({ minimum: 8 * MiB }),
    pids: Type.Optional(Type.Integer({ minimum: 8, maximum: 65536 })),
    mounts: Type.Optional(
      Type.Array(
        Obj({
          volume: Name,
          target: Type.String({ pattern: '^/[A-Za-z0-9_./-]{0,255}$' }),
          readOnly: Type.Optional(Type.Boolean()),
        }),
        { maxItems: 32 },
      ),
    ),
    capAdd: Type.Optional(Type.Array(Type.Union(ALLOWED_CAPABILITIES.map((c) => Type.Literal(c))), { maxItems: 8 })),
    readOnlyRootfs: Type.Optional(Type.Boolean()),
    start: Type.Optional(Type.Boolean({ description: 'Start right after creating (default true).' })),
  },
  {},
);
export type CreateContainerRequest = Static<typeof CreateContainerRequest>;

export const ContainerState = Type.Union(
  ['created', 'running', 'exited', 'dead', 'paused', 'restarting', 'removing'].map((s) => Type.Literal(s)),
);

export const Container = Obj(
  {
    id: ContainerId,
    name: Name,
    image: Name,
    state: ContainerState,
    exitCode: Type.Optional(Type.Integer()),
    oomKilled: Type.Optional(Type.Boolean()),
    cpuMillicores: Type.Integer(),
    memoryBytes: Type.Integer(),
    pids: Type.Integer(),
    createdAt: Timestamp,
  },
  {},
);
export type Container = Static<typeof Container>;
export const ContainerList = Obj({ containers: Type.Array(Container) });

export const ContainerStats = Obj(
  { memoryBytes: Type.Integer(), memoryLimitBytes: Type.Integer(), cpuNanos: Type.Integer(), pids: Type.Integer() },
  {},
);

export const CreateVmRequest = Obj(
  {
    name: Name,
    vcpus: Type.Integer({ minimum: 1, maximum: 64 }),
    memoryBytes: Type.Integer({ minimum: 64 * MiB }),
    boot: Type.Union([
      Obj({
        kind: Type.Literal('kernel'),
        kernel: Name,
        initrd: Type.Optional(Name),
        cmdline: Type.Optional(Type.String({ maxLength: 1024 })),
      }),
      Obj({ kind: Type.Literal('disk'), disk: Name }),
    ]),
    diskBytes: Type.Optional(Type.Integer({ minimum: 0 })),
    start: Type.Optional(Type.Boolean()),
  },
  {},
);
export type CreateVmRequest = Static<typeof CreateVmRequest>;

export const Vm = Obj(
  {
    id: VmId,
    name: Name,
    state: Type.Union(['defined', 'running', 'shutoff', 'crashed', 'paused'].map((s) => Type.Literal(s))),
    vcpus: Type.Integer(),
    memoryBytes: Type.Integer(),
    accelerator: Type.Union([Type.Literal('kvm'), Type.Literal('tcg')]),
    /**
     * Its address on the space's network (`a.b.c.d/n`) and gateway, which the guest sets itself:
     * a kernel-booted VM finds them in its command line as `ocs.ip=` and `ocs.gw=`.
     */
    network: Type.Optional(Obj({ address: Type.String(), gateway: Type.String(), mac: Type.String() }, {})),
    createdAt: Timestamp,
  },
  {},
);
export type Vm = Static<typeof Vm>;
export const VmList = Obj({ vms: Type.Array(Vm) });

/** How many lines of a container's log a read returns: at most, and when the caller does not say. */
export const LOG_TAIL = { max: 10_000, default: 200 } as const;
/** How many bytes of a VM's serial console a read returns. */
export const CONSOLE_TAIL = { max: 1024 * 1024, default: 64 * 1024 } as const;

export const LogChunk = Obj(
  { text: Type.String(), truncated: Type.Boolean() },
  { description: 'Tail of a log (container stdout/stderr or VM serial console).' },
);

export const StoredFile = Obj(
  {
    name: Name,
    sizeBytes: Type.Integer(),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    uploadedAt: Timestamp,
  },
  { description: 'A file the owner uploaded into the space: a kernel, an initramfs or a disk image.' },
);
export type StoredFile = Static<typeof StoredFile>;
export const FileList = Obj({ files: Type.Array(StoredFile) });

/** An IPv4 address or network (`a.b.c.d` or `a.b.c.d/n`); the node checks the octets. */
export const Cidr = Type.String({ pattern: '^[0-9]{1,3}([.][0-9]{1,3}){3}(/[0-9]{1,2})?$', maxLength: 18 });

/**
 * Where the space's workloads may open connections beyond its own network, within the node's
 * policy: nowhere (the default), anywhere the node allows, or the listed destinations only. The
 * node's denied networks (its own, loopback, the cloud's metadata address) stay out of reach
 * whatever is asked.
 */
export const Egress = Type.Union(
  [
    Obj({ mode: Type.Literal('none') }, {}),
    Obj({ mode: Type.Literal('all') }, {}),
    Obj({ mode: Type.Literal('list'), allow: Type.Array(Cidr, { minItems: 1, maxItems: 64 }) }, {}),
  ],
  {},
);
export type Egress = Static<typeof Egress>;

export const PortProtocol = Type.Union([Type.Literal('tcp'), Type.Literal('udp')]);
export const WorkloadRef = Obj({ kind: Type.Union([Type.Literal('container'), Type.Literal('vm')]), name: Name }, {});

export const PublishPortRequest = Obj(
  {
    target: WorkloadRef,
    port: Type.Integer({ minimum: 1, maximum: 65_535, description: "The workload's own port." }),
    protocol: Type.Optional(PortProtocol),
    hostPort: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65_535,
        description: "A port of the farmer's range; default: the node picks a free one.",
      }),
    ),
  },
  {},
);
export type PublishPortRequest = Static<typeof PublishPortRequest>;

/** A port of the node forwarded to a workload of the space, on every address of the node. */
export const PublishedPort = Obj(
  {
    hostPort: Type.Integer(),
    protocol: PortProtocol,
    target: WorkloadRef,
    port: Type.Integer(),
    /** The workload's address on the space's network. */
    address: Type.String(),
    createdAt: Timestamp,
  },
  {},
);
export type PublishedPort = Static<typeof PublishedPort>;

/** The space's network as its owner sees it. */
export const SpaceNetworkView = Obj(
  {
    /** Absent until the space's first workload. */
    subnet: Type.Optional(Type.String()),
    egress: Egress,
    published: Type.Array(PublishedPort),
    /** How many ports the space reserved, and the node's range they come from. */
    ports: Obj({ reserved: Type.Integer(), first: Type.Integer(), last: Type.Integer() }, {}),
  },
  {},
);
export type SpaceNetworkView = Static<typeof SpaceNetworkView>;
