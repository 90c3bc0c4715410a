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
  authorize,
  checkAuthority,
  isOcsError,
  parsePublicKey,
  validate,
  type BrokerArgs,
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
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
type RouteId = (typeof SPACE_ROUTES)[number]['id'];

export function createSpaceApp(d: SpaceAppDeps): Koa {
  const owner = parsePublicKey(d.config.ownerKey);
  const ownerId = owner.fingerprint();
  const prefix = `/v1/spaces/${d.config.spaceId}/api`;
  const nowSeconds = () => Math.floor((d.now ?? Date.now)() / 1000);

  const authorities = new Set(d.config.authorities);

  async function check(ctx: Context, spec: RouteSpec): Promise<Uint8Array> {
    checkAuthority(ctx.get('host') || undefined, authorities);
    const body = spec.body === 'binary' || !spec.body ? new Uint8Array() : await readJsonBody(ctx);
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
      },
      hashes: nativeHashes,
    });
    return body;
  }

  const router = new Router({ prefix });
  const files = join(d.config.dataDir, 'files');
  const name = (v: string | undefined, field: string): string => {
    if (v === undefined || !NAME_RE.test(v))
      throw new OcsError('invalid_request', `${field} is not a valid name`, { field });
    return v;
  };
  const tail = (ctx: Context, max: number, dflt: number): number => {
    const q = ctx.query.tail;
    if (q === undefined) return dflt;
    const n = typeof q === 'string' && /^[0-9]{1,8}$/.test(q) ? Number(q) : NaN;
    if (!(n >= 1 && n <= max)) throw new OcsError('invalid_request', `tail must be 1 to ${max}`, { field: 'tail' });
    return n;
  };
  const upload = async (ctx: Context) =>
    receiveUpload(ctx.req, {
      dir: files,
      contentDigest: ctx.get('content-digest') || undefined,
      maxBytes: d.config.resources.storageBytes,
      hashes: nativeHashes,
    });

  const handlers: Record<RouteId, (ctx: Context, body: unknown) => Promise<unknown>> = {
    spaceStatus: () => d.broker('status', {}),
    createVolume: (_ctx, body) => d.broker('createVolume', body as BrokerArgs<'createVolume'>),
    listVolumes: () => d.broker('listVolumes', {}),
    deleteVolume: (ctx) => d.broker('deleteVolume', { volume: name(ctx.params.volume, 'volume') }),
    loadImage: async (ctx) => {
      const image = name(ctx.params.image, 'image');
      const up = await upload(ctx);
      try {
        return await d.broker('loadImage', { image, file: up.spoolName });
      } finally {
        await rm(join(files, up.spoolName), { force: true });
      }
    },
    listImages: () => d.broker('listImages', {}),
    deleteImage: (ctx) => d.broker('deleteImage', { image: name(ctx.params.image, 'image') }),
    uploadFile: async (ctx) => {
      const file = name(ctx.params.file, 'file');
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
    deleteFile: async (ctx) => {
      const file = name(ctx.params.file, 'file');
      const known = d.state.deleteFile(file);
      try {
        await unlink(join(files, file));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (!known) throw new OcsError('not_found', `no file ${file} in this space`, { file });
      }
      return undefined;
    },
    createContainer: (_ctx, body) => d.broker('createContainer', body as BrokerArgs<'createContainer'>),
    listContainers: () => d.broker('listContainers', {}),
    getContainer: (ctx) => d.broker('getContainer', { container: name(ctx.params.container, 'container') }),
    startContainer: (ctx) => d.broker('startContainer', { container: name(ctx.params.container, 'container') }),
    stopContainer: (ctx) => d.broker('stopContainer', { container: name(ctx.params.container, 'container') }),
    deleteContainer: (ctx) => d.broker('deleteContainer', { container: name(ctx.params.container, 'container') }),
    containerLogs: (ctx) =>
      d.broker('containerLogs', { container: name(ctx.params.container, 'container'), tail: tail(ctx, 10_000, 200) }),
    containerStats: (ctx) => d.broker('containerStats', { container: name(ctx.params.container, 'container') }),
    createVm: (_ctx, body) => d.broker('createVm', body as BrokerArgs<'createVm'>),
    listVms: () => d.broker('listVms', {}),
    getVm: (ctx) => d.broker('getVm', { vm: name(ctx.params.vm, 'vm') }),
    startVm: (ctx) => d.broker('startVm', { vm: name(ctx.params.vm, 'vm') }),
    stopVm: (ctx) => d.broker('stopVm', { vm: name(ctx.params.vm, 'vm') }),
    deleteVm: (ctx) => d.broker('deleteVm', { vm: name(ctx.params.vm, 'vm') }),
    vmConsole: (ctx) =>
      d.broker('vmConsole', { vm: name(ctx.params.vm, 'vm'), tail: tail(ctx, 1024 * 1024, 64 * 1024) }),
  };

  for (const spec of SPACE_ROUTES as readonly RouteSpec[]) {
    const handler = handlers[spec.id as RouteId];
    const path = spec.path.replace(/\{(\w+)\}/g, ':$1');
    const method = spec.method.toLowerCase() as 'get' | 'post' | 'delete';
    router[method](path, async (ctx) => {
      const raw = await check(ctx, spec);
      const body = spec.body && spec.body !== 'binary' ? validate(spec.body, parseJson(raw)) : undefined;
      const mutating = spec.method !== 'GET';
      try {
        const result = await handler(ctx, body);
        ctx.status = spec.status;
        if (spec.status !== 204) ctx.body = result;
        if (mutating) d.state.journal({ op: spec.id, target: firstParam(ctx), outcome: 'ok' });
      } catch (err) {
        if (mutating)
          d.state.journal({
            op: spec.id,
            target: firstParam(ctx),
            outcome: isOcsError(err) && err.code !== 'internal' ? 'refused' : 'failed',
            code: isOcsError(err) ? err.code : 'internal',
          });
        throw err;
      }
    });
  }

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

function parseJson(raw: Uint8Array): unknown {
  if (raw.length === 0) return {};
  try {
    return JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8')) as unknown;
  } catch {
    throw new OcsError('invalid_request', 'the body is not JSON');
  }
}

function firstParam(ctx: Context): string | undefined {
  const p = ctx.params as Record<string, string> | undefined;
  return p ? Object.values(p)[0] : undefined;
}
