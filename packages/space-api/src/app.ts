/**
 * The owner-only API of one space. It trusts nobody, not even the daemon that forwards to it:
 * every request must carry a token from a trusted issuer with the right role and an RFC 9421
 * signature by this space's owner key.
 */
import Koa, { type Context } from 'koa';
import Router from '@koa/router';
import { rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CONSOLE_TAIL,
  LOG_TAIL,
  OcsError,
  SPACE_ROUTES,
  operationOfRoute,
  validateQuery,
  type BodyOf,
  type ParamsOf,
  type QueryOf,
  type SpaceRoute,
  type SpaceRouteId,
  authorize,
  checkAuthority,
  isOcsError,
  parsePublicKey,
  validate,
  type RouteSpec,
  type StoredFile,
  type TokenVerifier,
} from '@ocs/protocol';
import type { Logger } from 'pino';
import type { SpaceProcessConfig } from './config.js';
import { nativeHashes, ownerVerify } from './crypto.js';
import type { BrokerCall } from './broker-client.js';
import type { SpaceState } from './state.js';
import { publishUpload, receiveUpload } from './uploads.js';
import { bindCatalogue, errorMiddleware, methodNotAllowed, parseJson, readBody } from '@ocs/http';

export interface SpaceAppDeps {
  config: SpaceProcessConfig;
  verifyToken: TokenVerifier;
  /** The replay cache and journal, in the space's own storage. */
  state: SpaceState;
  broker: BrokerCall;
  logger: Logger;
  now?: () => number;
}

const JSON_LIMIT = 64 * 1024;

/** A route's handler: its path parameters, query and body already checked against the catalogue. */
type Handler<R> = (
  ctx: Context,
  input: { params: ParamsOf<R>; query: QueryOf<R>; body: BodyOf<R> },
) => Promise<unknown>;

export function createSpaceApp(d: SpaceAppDeps): Koa {
  const owner = parsePublicKey(d.config.ownerKey);
  const ownerId = owner.fingerprint();
  const prefix = `/v1/spaces/${d.config.spaceId}/api`;
  const nowSeconds = () => Math.floor((d.now ?? Date.now)() / 1000);

  const authorities = new Set(d.config.authorities);

  async function check(ctx: Context, spec: RouteSpec): Promise<Uint8Array> {
    checkAuthority(ctx.get('host') || undefined, authorities);
    const body = spec.body === 'binary' || !spec.body ? new Uint8Array() : await readBody(ctx, JSON_LIMIT);
    // Same URI reconstruction as the daemon: the request arrives untouched, Host included.
    const req = {
      method: ctx.method,
      url: `https://${ctx.get('host')}${ctx.originalUrl}`,
      headers: ctx.headers as Record<string, string>,
      rawHeaders: ctx.req.rawHeaders,
      body,
    };
    await authorize(req, {
      verifyToken: d.verifyToken,
      roles: spec.roles,
      // The daemon checks the org before it forwards; this process trusts the daemon for nothing.
      org: d.config.org,
      signature: {
        resolveKey: (keyId) => {
          if (keyId !== ownerId) throw new OcsError('not_owner', 'this space is bound to another key');
          return owner.bytes;
        },
        verify: ownerVerify,
        now: nowSeconds,
        nonceStore: d.state,
        node: d.config.tlsFingerprint,
      },
      hashes: nativeHashes,
    });
    return body;
  }

  const router = new Router({ prefix });
  const files = join(d.config.dataDir, 'files');
  const upload = async (ctx: Context) =>
    receiveUpload(ctx.req, {
      dir: files,
      contentDigest: ctx.get('content-digest') || undefined,
      maxBytes: d.config.resources.storageBytes,
      hashes: nativeHashes,
    });

  const handlers: { [K in SpaceRouteId]: Handler<Extract<SpaceRoute, { id: K }>> } = {
    spaceStatus: () => d.broker('status', {}),
    createVolume: (_ctx, { body }) => d.broker('createVolume', body),
    listVolumes: () => d.broker('listVolumes', {}),
    deleteVolume: (_ctx, { params }) => d.broker('deleteVolume', params),
    loadImage: async (ctx, { params }) => {
      const up = await upload(ctx);
      try {
        return await d.broker('loadImage', { image: params.image, file: up.spoolName });
      } finally {
        await rm(join(files, up.spoolName), { force: true });
      }
    },
    listImages: () => d.broker('listImages', {}),
    deleteImage: (_ctx, { params }) => d.broker('deleteImage', params),
    uploadFile: async (ctx, { params: { file } }) => {
      const up = await upload(ctx);
      await publishUpload(files, up.spoolName, file);
      const rec: StoredFile = {
        name: file,
        sizeBytes: up.sizeBytes,
        sha256: up.sha256,
        uploadedAt: new Date().toISOString(),
      };
      d.state.deleteFile(file);
      d.state.putFile(rec);
      return rec;
    },
    listFiles: async () => ({ files: d.state.listFiles() }),
    deleteFile: async (_ctx, { params: { file } }) => {
      const known = d.state.deleteFile(file);
      try {
        await unlink(join(files, file));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (!known) throw new OcsError('not_found', `no file ${file} in this space`, { file });
      }
      return undefined;
    },
    createContainer: (_ctx, { body }) => d.broker('createContainer', body),
    listContainers: () => d.broker('listContainers', {}),
    getContainer: (_ctx, { params }) => d.broker('getContainer', params),
    startContainer: (_ctx, { params }) => d.broker('startContainer', params),
    stopContainer: (_ctx, { params }) => d.broker('stopContainer', params),
    deleteContainer: (_ctx, { params }) => d.broker('deleteContainer', params),
    containerLogs: (_ctx, { params, query }) =>
      d.broker('containerLogs', { ...params, tail: query.tail ?? LOG_TAIL.default }),
    containerStats: (_ctx, { params }) => d.broker('containerStats', params),
    createVm: (_ctx, { body }) => d.broker('createVm', body),
    listVms: () => d.broker('listVms', {}),
    getVm: (_ctx, { params }) => d.broker('getVm', params),
    startVm: (_ctx, { params }) => d.broker('startVm', params),
    stopVm: (_ctx, { params }) => d.broker('stopVm', params),
    deleteVm: (_ctx, { params }) => d.broker('deleteVm', params),
    getNetwork: () => d.broker('getNetwork', {}),
    setEgress: (_ctx, { body }) => d.broker('setEgress', { egress: body }),
    publishPort: (_ctx, { body }) => d.broker('publishPort', body),
    unpublishPort: (_ctx, { params }) => d.broker('unpublishPort', { hostPort: Number(params.hostPort) }),
    vmConsole: (_ctx, { params, query }) =>
      d.broker('vmConsole', { ...params, tail: query.tail ?? CONSOLE_TAIL.default }),
  };

  // Every route of the catalogue, bound here and only here: auth, then path, query and body by their schemas.
  bindCatalogue(router, SPACE_ROUTES as readonly RouteSpec[], async (spec, ctx) => {
    const handler = handlers[spec.id as SpaceRouteId] as Handler<RouteSpec>;
    const raw = await check(ctx, spec);
    const mutating = !operationOfRoute(spec.id)!.readOnly;
    // The caller's own value, even when the schema refuses it (the journal makes it printable).
    const target = Object.values(ctx.params as Record<string, string>)[0];
    try {
      const input = {
        params: spec.params ? validate(spec.params, { ...ctx.params }, 'path parameter') : {},
        query: validateQuery(spec.query, ctx.query),
        body: spec.body && spec.body !== 'binary' ? validate(spec.body, parseJson(raw)) : undefined,
      };
      const result = await handler(ctx, input as never);
      ctx.status = spec.status;
      if (spec.status !== 204) ctx.body = result;
      if (mutating) d.state.journal({ op: spec.id, target, outcome: 'ok' });
    } catch (err) {
      if (mutating)
        d.state.journal({
          op: spec.id,
          target,
          outcome: isOcsError(err) && err.code !== 'internal' ? 'refused' : 'failed',
          code: isOcsError(err) ? err.code : 'internal',
        });
      throw err;
    }
  });

  const app = new Koa();
  app.use(
    errorMiddleware(d.logger, (ctx, e) =>
      d.logger.info({ code: e.code, method: ctx.method, path: ctx.path }, 'refused'),
    ),
  );
  // Anything not for this space is refused before any check: a request for space B never reaches B's rules here.
  app.use(async (ctx, next) => {
    if (ctx.path !== prefix && !ctx.path.startsWith(`${prefix}/`))
      throw new OcsError('not_owner', 'this process serves another space');
    await next();
  });
  app.use(router.routes());
  app.use(methodNotAllowed(router));
  return app;
}
