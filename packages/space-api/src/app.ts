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
  OcsError,
  SPACE_ROUTES,
  brokerArgsOf,
  isBrokerOp,
  operationOfRoute,
  type LocalRouteId,
  type RouteInput,
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
import { bindCatalogue, errorMiddleware, logResponseErrors, methodNotAllowed, parseJson, readBody } from '@ocs/http';

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

  // The routes with logic of their own; every other route forwards its input to the broker op
  // of its catalogue entry, mapped as the entry says (`brokerArgsOf`).
  const handlers: { [K in LocalRouteId]: Handler<Extract<SpaceRoute, { id: K }>> } & {
    [K in SpaceRouteId]?: Handler<Extract<SpaceRoute, { id: K }>>;
  } = {
    loadImage: async (ctx, { params }) => {
      const up = await upload(ctx);
      try {
        return await d.broker('loadImage', { image: params.image, file: up.spoolName });
      } finally {
        await rm(join(files, up.spoolName), { force: true });
      }
    },
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
  };
  function handlerOf(spec: RouteSpec): { handler: Handler<RouteSpec>; readOnly: boolean } {
    const op = operationOfRoute(spec.id);
    if (!op) throw new Error(`route ${spec.id} has no catalogue entry`);
    const own = handlers[spec.id as SpaceRouteId] as Handler<RouteSpec> | undefined;
    if (own) return { handler: own, readOnly: op.readOnly };
    if (!op.broker || !isBrokerOp(op.name)) throw new Error(`route ${spec.id} has neither a handler nor a broker op`);
    const name = op.name;
    return {
      handler: (_ctx, input) => d.broker(name, brokerArgsOf(op, input as RouteInput) as never),
      readOnly: op.readOnly,
    };
  }
  const bound = new Map((SPACE_ROUTES as readonly RouteSpec[]).map((spec) => [spec.id, handlerOf(spec)]));

  // Every route of the catalogue, bound here and only here: auth, then path, query and body by their schemas.
  bindCatalogue(router, SPACE_ROUTES as readonly RouteSpec[], async (spec, ctx) => {
    const { handler, readOnly } = bound.get(spec.id)!;
    const raw = await check(ctx, spec);
    const mutating = !readOnly;
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
  logResponseErrors(app, d.logger);
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
