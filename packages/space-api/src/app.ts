/**
 * The owner-only API of one space. It trusts nobody, not even the daemon that forwards to it:
 * every request must carry a token from a trusted issuer with the right role and an RFC 9421
 * signature by this space's owner key.
 */
import Koa, { type Context } from 'koa';
import Router from '@koa/router';
import {
  OcsError,
  SPACE_ROUTES,
  authorize,
  isOcsError,
  parsePublicKey,
  type NonceStore,
  type RouteSpec,
  type SpaceStatus,
  type TokenVerifier,
} from '@ocs/protocol';
import type { Logger } from 'pino';
import type { SpaceProcessConfig } from './config.js';
import { nativeHashes, ownerVerify } from './crypto.js';

export interface SpaceAppDeps {
  config: SpaceProcessConfig;
  verifyToken: TokenVerifier;
  nonceStore: NonceStore;
  logger: Logger;
  now?: () => number;
}

const JSON_LIMIT = 64 * 1024;
type RouteId = (typeof SPACE_ROUTES)[number]['id'];
const route = (id: RouteId): RouteSpec => SPACE_ROUTES.find((r) => r.id === id)!;

export function createSpaceApp(d: SpaceAppDeps): Koa {
  const owner = parsePublicKey(d.config.ownerKey);
  const ownerId = owner.fingerprint();
  const prefix = `/v1/spaces/${d.config.spaceId}/api`;
  const nowSeconds = () => Math.floor((d.now ?? Date.now)() / 1000);

  async function check(ctx: Context, spec: RouteSpec): Promise<Uint8Array> {
    const body = spec.body === 'binary' || !spec.body ? new Uint8Array() : await readJsonBody(ctx);
    // Same URI reconstruction as the daemon: the request arrives untouched, Host included.
    const req = {
      method: ctx.method,
      url: `https://${ctx.get('host')}${ctx.originalUrl}`,
      headers: ctx.headers as Record<string, string>,
      body,
    };
    await authorize(req, {
      verifyToken: d.verifyToken,
      roles: spec.roles,
      signature: {
        resolveKey: (keyId) => {
          if (keyId !== ownerId) throw new OcsError('not_owner', 'this space is bound to another key');
          return owner.bytes;
        },
        verify: ownerVerify,
        now: nowSeconds,
        nonceStore: d.nonceStore,
      },
      hashes: nativeHashes,
    });
    return body;
  }

  const router = new Router({ prefix });
  router.get('/status', async (ctx) => {
    await check(ctx, route('spaceStatus'));
    const status: SpaceStatus = {
      spaceId: d.config.spaceId,
      resources: d.config.resources,
      used: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0, pids: 0 },
      volumes: 0,
      containers: 0,
      vms: 0,
    };
    ctx.body = status;
  });

  const app = new Koa();
  app.use(async (ctx, next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new OcsError('not_found', 'no such route');
    } catch (err) {
      const e = isOcsError(err) ? err : new OcsError('internal', 'internal error');
      if (!isOcsError(err)) d.logger.error({ err, method: ctx.method, path: ctx.path }, 'request failed');
      else d.logger.info({ code: e.code, method: ctx.method, path: ctx.path }, 'refused');
      ctx.status = e.status;
      ctx.body = e.toBody();
    }
  });
  // Anything not for this space is refused before any check: a request for space B never reaches B's rules here.
  app.use(async (ctx, next) => {
    if (ctx.path !== prefix && !ctx.path.startsWith(`${prefix}/`))
      throw new OcsError('not_owner', 'this process serves another space');
    await next();
  });
  app.use(router.routes());
  return app;
}

/**
 * Reads a body up to a limit. Hand-written rather than raw-body: that package pulls in a
 * 480 KB charset library this process never needs, and every start of an idle space pays for it.
 */
async function readJsonBody(ctx: Context): Promise<Uint8Array> {
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > JSON_LIMIT) throw new OcsError('body_too_large', 'the body is too large');
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > JSON_LIMIT) throw new OcsError('body_too_large', 'the body is too large');
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof OcsError) throw err;
    throw new OcsError('invalid_request', 'the body could not be read');
  }
  const b = Buffer.concat(chunks);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}
