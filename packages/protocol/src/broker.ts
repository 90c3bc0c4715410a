/**
 * The contract between a space's API process and the daemon's privileged broker: one operation
 * per host action, each a JSON body posted to `/<op>` on the space's own broker connection (HTTP/2
 * over a socket the space process inherits at {@link BROKER_FD}). The broker learns which space
 * asks from the connection alone and validates every argument with these
 * schemas again: a compromised space process can send anything, and gets no more than its owner.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Empty, Name, Obj } from './schemas/common.js';
import * as S from './schemas/space.js';
import { IssuerKeySets } from './schemas/space-process.js';

const Ref = <K extends string>(key: K) => Obj({ [key]: Name } as { [P in K]: typeof Name });
const Tail = <K extends string>(key: K, max: number) =>
  Obj({ [key]: Name, tail: Type.Integer({ minimum: 1, maximum: max }) } as {
    [P in K]: typeof Name;
  } & { tail: ReturnType<typeof Type.Integer> });

/** An upload still in its spool name (see the space API's uploads): never a valid owner name. */
export const SpoolName = Type.String({ pattern: '^\\.upload-[0-9a-f]{16}$' });

/** Every operation: its arguments and its result; `readOnly` ones change nothing (audited only when refused). */
export const BROKER_OPS = {
  status: { args: Empty, result: S.SpaceStatus, readOnly: true },
  createVolume: { args: S.CreateVolumeRequest, result: S.Volume },
  listVolumes: { args: Empty, result: S.VolumeList, readOnly: true },
  deleteVolume: { args: Ref('volume'), result: Empty },
  /** `file` names an uploaded file in the space's storage: the `docker save` tarball. */
  loadImage: { args: Obj({ image: Name, file: Type.Union([Name, SpoolName]) }), result: S.Image },
  listImages: { args: Empty, result: S.ImageList, readOnly: true },
  deleteImage: { args: Ref('image'), result: Empty },
  createContainer: { args: S.CreateContainerRequest, result: S.Container },
  listContainers: { args: Empty, result: S.ContainerList, readOnly: true },
  getContainer: { args: Ref('container'), result: S.Container, readOnly: true },
  startContainer: { args: Ref('container'), result: S.Container },
  stopContainer: { args: Ref('container'), result: S.Container },
  deleteContainer: { args: Ref('container'), result: Empty },
  containerLogs: { args: Tail('container', S.LOG_TAIL.max), result: S.LogChunk, readOnly: true },
  containerStats: { args: Ref('container'), result: S.ContainerStats, readOnly: true },
  createVm: { args: S.CreateVmRequest, result: S.Vm },
  listVms: { args: Empty, result: S.VmList, readOnly: true },
  getVm: { args: Ref('vm'), result: S.Vm, readOnly: true },
  startVm: { args: Ref('vm'), result: S.Vm },
  stopVm: { args: Ref('vm'), result: S.Vm },
  deleteVm: { args: Ref('vm'), result: Empty },
  vmConsole: { args: Tail('vm', S.CONSOLE_TAIL.max), result: S.LogChunk, readOnly: true },
  getNetwork: { args: Empty, result: S.SpaceNetworkView, readOnly: true },
  setEgress: { args: Obj({ egress: S.Egress }), result: S.SpaceNetworkView },
  publishPort: { args: S.PublishPortRequest, result: S.PublishedPort },
  unpublishPort: { args: Obj({ hostPort: Type.Integer({ minimum: 1, maximum: 65_535 }) }), result: Empty },
  /**
   * The keys of the issuers the daemon fetches from the network: the space process has no
   * network, and asks here when its copy is old or a token names a `kid` it lacks.
   */
  issuerKeys: { args: Empty, result: IssuerKeySets, readOnly: true },
} as const satisfies Record<string, { args: TSchema; result: TSchema; readOnly?: true }>;

export type BrokerOp = keyof typeof BROKER_OPS;
export type BrokerArgs<O extends BrokerOp> = Static<(typeof BROKER_OPS)[O]['args']>;
export type BrokerResult<O extends BrokerOp> = Static<(typeof BROKER_OPS)[O]['result']>;

export function isReadOnlyOp(op: BrokerOp): boolean {
  return (BROKER_OPS[op] as { readOnly?: true }).readOnly === true;
}

export function isBrokerOp(op: string): op is BrokerOp {
  return Object.prototype.hasOwnProperty.call(BROKER_OPS, op);
}

/** Largest JSON body the broker reads. */
export const BROKER_BODY_LIMIT = 128 * 1024;

/**
 * The descriptor a space process inherits its broker connection on: the child's end of a socket
 * pair the daemon makes at spawn, with no name in the file system (fd 3 carries the seccomp
 * program to the sandbox).
 */
export const BROKER_FD = 4;
