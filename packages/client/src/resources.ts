/**
 * Typed operations over the route catalogue: every method is one entry of NODE_ROUTES or
 * SPACE_ROUTES, with its parameters, body and response types derived from the entry's schemas,
 * so a change of contract is a compile error here, not a surprise at run time.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { nativeHashes } from '@ocs/protocol/node';
import { readArchiveHeadFrame } from './archives.js';
import {
  ARCHIVE_HEAD_HEADER,
  ARCHIVE_MEDIA_TYPE,
  SPACE_API_PREFIX,
  archiveHeadDigest,
  nodeRoute,
  rewrapForNode,
  spaceRoute,
  type BodyOf,
  type HeadersOf,
  type NodeRouteId,
  type ParamsOf,
  type QueryOf,
  type ResponseOf,
  type RouteSpec,
  type SpaceRouteId,
  type NodeRoute,
  type SpaceRoute,
} from '@ocs/protocol';
import { BaseClient, type CallOptions, type ClientOptions, type FileBody } from './sdk.js';

type N<I extends NodeRouteId> = Extract<NodeRoute, { id: I }>;
type S<I extends SpaceRouteId> = Extract<SpaceRoute, { id: I }>;

/** What a route takes: its path parameters, query, headers and body, as its schemas say. */
export interface RouteInput<R> {
  params?: ParamsOf<R>;
  query?: QueryOf<R>;
  headers?: Partial<HeadersOf<R>> & Record<string, string>;
  /** A binary body: a file, bytes, or a stream made as it is sent (see `CallOptions.source`). */
  body?: BodyOf<R> extends 'binary' ? FileBody | Uint8Array | (() => Readable) : BodyOf<R>;
}

export interface UploadOptions {
  onProgress?: (sent: number, total: number) => void;
}

/** Fills `{name}` of a path, each value encoded as one segment. */
export function fillPath(path: string, params: Record<string, unknown> = {}): string {
  return path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = params[name];
    if (typeof v !== 'string' || v === '') throw new TypeError(`missing path parameter ${name}`);
    return encodeURIComponent(v);
  });
}

/** A node's client: every operation of both APIs, typed, over one pool of pinned connections. */
export class OcsClient extends BaseClient {
  constructor(options: ClientOptions) {
    super(options);
  }

  /** One catalogue route: path filled, query added, signed if the route is, typed both ways. */
  async route<R extends RouteSpec>(
    spec: R,
    input: RouteInput<R> = {},
    o: { prefix?: string; idempotent?: boolean; contentType?: string } & UploadOptions = {},
  ): Promise<ResponseOf<R>> {
    let path = (o.prefix ?? '') + fillPath(spec.path, input.params as Record<string, unknown>);
    const q = Object.entries((input.query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== undefined);
    if (q.length) path += `?${new URLSearchParams(q.map(([k, v]): [string, string] => [k, String(v)])).toString()}`;
    const opts: CallOptions = {
      sign: spec.signature !== 'none',
      ...(input.headers ? { headers: input.headers as Record<string, string> } : {}),
      ...(o.idempotent ? { idempotent: true } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    };
    let json: unknown;
    if (spec.body === 'binary') {
      const b = input.body as FileBody | Uint8Array | (() => Readable) | undefined;
      if (b instanceof Uint8Array) opts.raw = b;
      else if (typeof b === 'function') opts.source = b;
      else if (b) opts.file = b;
      opts.contentType = o.contentType ?? 'application/x-tar';
    } else if (spec.body) json = input.body ?? {};
    const res = await this.call(spec.method, path, json, opts);
    return (spec.status === 204 ? undefined : res.body) as ResponseOf<R>;
  }

  readonly node = {
    info: () => this.route(nodeRoute('getNode')),
    health: () => this.route(nodeRoute('health')),
    /** The Prometheus text of /metrics (a monitor's or the farmer's token). */
    metrics: () => this.route(nodeRoute('metrics')),
    /** Retires the node (farmer): no new space; each space moves where its delegation allows, or is exported. */
    drain: (body: BodyOf<N<'drainNode'>> = {}) => this.route(nodeRoute('drainNode'), { body }),
    drainStatus: () => this.route(nodeRoute('getDrain')),
    cancelDrain: () => this.route(nodeRoute('cancelDrain')),
  };

  readonly audit = {
    list: (query: QueryOf<N<'listAudit'>> = {}) => this.route(nodeRoute('listAudit'), { query }),
  };

  readonly spaces = {
    /**
     * Reserves a space bound to this client's owner key. Under an idempotency key (one is made
     * if none is given), so a retry after a lost response returns the same space.
     */
    reserve: (
      body: Omit<BodyOf<N<'createSpace'>>, 'ownerKey'> & { ownerKey?: BodyOf<N<'createSpace'>>['ownerKey'] },
      o: { idempotencyKey?: string } = {},
    ) => {
      const ownerKey = body.ownerKey ?? this.owner().publicKey.toBase64url();
      return this.route(
        nodeRoute('createSpace'),
        {
          body: { ...body, ownerKey },
          headers: { 'idempotency-key': o.idempotencyKey ?? newIdempotencyKey() },
        },
        { idempotent: true },
      );
    },
    list: () => this.route(nodeRoute('listSpaces')),
    get: (spaceId: string) => this.route(nodeRoute('getSpace'), { params: { spaceId } }),
    renew: (spaceId: string, leaseSeconds: number) =>
      this.route(nodeRoute('renewSpace'), { params: { spaceId }, body: { leaseSeconds } }),
    /**
     * Locks the space. The node answers within a second, `locking` while the space still shuts
     * down (a container's stop grace, a VM's shutdown); this waits until it is `locked` (its
     * state polled) unless `wait` is false, and answers the space as it ends.
     */
    lock: async (spaceId: string, o: { wait?: boolean; timeoutMs?: number } = {}) => {
      let s = await this.route(nodeRoute('lockSpace'), { params: { spaceId }, body: {} });
      const until = Date.now() + (o.timeoutMs ?? 10 * 60_000);
      while (o.wait !== false && s.state === 'locking' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 200));
        s = await this.spaces.get(spaceId);
      }
      return s;
    },
    /** Unlocks with the owner's wrapped key: opened here, sealed to the node; the plaintext never leaves memory. */
    unlock: async (spaceId: string, wrappedKey: string) => {
      const sealedKey = await rewrapForNode(wrappedKey, this.owner(), (await this.node.info()).unlockRecipient);
      return this.route(nodeRoute('unlockSpace'), { params: { spaceId }, body: { sealedKey } });
    },
    /** A fresh key for the space's storage; returns the new wrapped key (the old one no longer opens it). */
    rotateKey: async (spaceId: string, wrappedKey: string) => {
      const sealedKey = await rewrapForNode(wrappedKey, this.owner(), (await this.node.info()).unlockRecipient);
      return this.route(nodeRoute('rotateSpaceKey'), { params: { spaceId }, body: { sealedKey } });
    },
    destroy: (spaceId: string) => this.route(nodeRoute('deleteSpace'), { params: { spaceId } }),
    /**
     * The space's storage as a space archive (ciphertext; the space must be locked), streamed
     * unread: pass it through an `ArchiveReader` to check it as it comes.
     */
    export: (spaceId: string) =>
      this.download(fillPath(nodeRoute('exportSpace').path, { spaceId }), { accept: ARCHIVE_MEDIA_TYPE }),
    /**
     * Restores an archive file (as `saveArchive` wrote it: signed by this client's owner key) as
     * a new space on this node, a fork of the archived one bound to the same key. It comes back
     * locked, and opens with the archived space's wrapped key.
     */
    restore: async (file: string, query: QueryOf<N<'restoreSpace'>>, o: UploadOptions = {}) => {
      // Bound to the request by its head's digest (the archive's own signature covers the
      // rest): the file is read once, as it is sent, not hashed whole first.
      const { bytes } = await readArchiveHeadFrame(file);
      const size = (await stat(file)).size;
      return this.route(
        nodeRoute('restoreSpace'),
        {
          query,
          body: () => createReadStream(file),
          headers: {
            [ARCHIVE_HEAD_HEADER]: archiveHeadDigest(bytes, nativeHashes),
            'content-length': String(size),
          },
        },
        { ...o, contentType: ARCHIVE_MEDIA_TYPE },
      );
    },
    /**
     * A move's first step, on the target: room for the space, waiting for it from the node
     * `body.source` names. {@link moveSpace} (moves.ts) does both steps.
     */
    openImport: (
      body: Omit<BodyOf<N<'openImport'>>, 'ownerKey'> & { ownerKey?: BodyOf<N<'openImport'>>['ownerKey'] },
    ) =>
      this.route(nodeRoute('openImport'), {
        // An orchestrator names the space's owner key and brings its delegation; an owner, its own key.
        body: { ...body, ownerKey: body.ownerKey ?? this.owner().publicKey.toBase64url() },
      }),
    /** A move's second step, on the source: the space goes to the node that opened an import for it. */
    move: (spaceId: string, to: BodyOf<N<'moveSpace'>>['to']) =>
      this.route(nodeRoute('moveSpace'), { params: { spaceId }, body: { to } }),
    /** Keeps the owner's delegation (`signDelegation`): who may move the space without the owner, until when. */
    delegate: (spaceId: string, delegation: string) =>
      this.route(nodeRoute('delegateSpace'), { params: { spaceId }, body: { delegation } }),
    revokeDelegation: (spaceId: string) => this.route(nodeRoute('revokeDelegation'), { params: { spaceId } }),
  };

  /**
   * A move's steps between nodes, on the target: a source node's client (signing with its
   * identity key, no token) sends the archive, commits or drops the import. `moveSpace` and
   * the nodes use these; an owner never calls them.
   */
  readonly imports = {
    receive: (spaceId: string, archive: () => Readable) =>
      this.route(
        nodeRoute('receiveImport'),
        { params: { spaceId }, body: archive },
        { contentType: ARCHIVE_MEDIA_TYPE },
      ),
    /** What the import holds of a move's seed: where a cut seed goes on from. */
    state: (spaceId: string) => this.route(nodeRoute('importState'), { params: { spaceId } }),
    commit: (spaceId: string) => this.route(nodeRoute('commitImport'), { params: { spaceId }, body: {} }),
    abort: (spaceId: string) => this.route(nodeRoute('abortImport'), { params: { spaceId } }),
    /** A draining node's import on a peer that takes its drains, on the owner's delegation. */
    openPeer: (body: BodyOf<N<'openPeerImport'>>) => this.route(nodeRoute('openPeerImport'), { body }),
  };

  /** The owner-only API of one space (forwarded by the node to the space's own process). */
  space(spaceId: string) {
    const prefix = fillPath(SPACE_API_PREFIX, { spaceId });
    const r = <I extends SpaceRouteId>(id: I, input: RouteInput<S<I>> = {}, o: UploadOptions = {}) =>
      this.route(spaceRoute(id), input, { prefix, ...o });
    return {
      /** Any operation of the space's catalogue by its id (what the typed methods below call). */
      call: <I extends SpaceRouteId>(id: I, input: RouteInput<S<I>> = {}) => r(id, input),
      status: () => r('spaceStatus'),
      volumes: {
        create: (body: BodyOf<S<'createVolume'>>) => r('createVolume', { body }),
        list: () => r('listVolumes'),
        delete: (volume: string) => r('deleteVolume', { params: { volume } }),
      },
      images: {
        /** Loads a `docker save` tarball, streamed from its file. */
        load: (image: string, source: FileBody | Uint8Array, o: UploadOptions = {}) =>
          r('loadImage', { params: { image }, body: source }, o),
        list: () => r('listImages'),
        delete: (image: string) => r('deleteImage', { params: { image } }),
      },
      files: {
        upload: (file: string, source: FileBody | Uint8Array, o: UploadOptions = {}) =>
          r('uploadFile', { params: { file }, body: source }, o),
        list: () => r('listFiles'),
        delete: (file: string) => r('deleteFile', { params: { file } }),
      },
      containers: {
        create: (body: BodyOf<S<'createContainer'>>) => r('createContainer', { body }),
        list: () => r('listContainers'),
        get: (container: string) => r('getContainer', { params: { container } }),
        start: (container: string) => r('startContainer', { params: { container }, body: {} }),
        stop: (container: string) => r('stopContainer', { params: { container }, body: {} }),
        delete: (container: string) => r('deleteContainer', { params: { container } }),
        logs: (container: string, query: QueryOf<S<'containerLogs'>> = {}) =>
          r('containerLogs', { params: { container }, query }),
        stats: (container: string) => r('containerStats', { params: { container } }),
      },
      vms: {
        create: (body: BodyOf<S<'createVm'>>) => r('createVm', { body }),
        list: () => r('listVms'),
        get: (vm: string) => r('getVm', { params: { vm } }),
        start: (vm: string) => r('startVm', { params: { vm }, body: {} }),
        stop: (vm: string) => r('stopVm', { params: { vm }, body: {} }),
        delete: (vm: string) => r('deleteVm', { params: { vm } }),
        console: (vm: string, query: QueryOf<S<'vmConsole'>> = {}) => r('vmConsole', { params: { vm }, query }),
      },
      network: {
        get: () => r('getNetwork'),
        /** Within the node's policy; `{ mode: 'none' }` takes it back. */
        setEgress: (egress: BodyOf<S<'setEgress'>>) => r('setEgress', { body: egress }),
        publish: (body: BodyOf<S<'publishPort'>>) => r('publishPort', { body }),
        unpublish: (hostPort: number) => r('unpublishPort', { params: { hostPort: String(hostPort) } }),
      },
    };
  }

  private owner() {
    if (!this.options.ownerKey) throw new TypeError('this operation needs the owner key (ClientOptions.ownerKey)');
    return this.options.ownerKey;
  }
}

/** 32 random base64url characters: unique per reservation, from the client's own randomness. */
export const newIdempotencyKey = (): string => `ocs-${randomBytes(24).toString('base64url')}`;
