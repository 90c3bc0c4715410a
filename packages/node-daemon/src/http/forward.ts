/**
 * Forwards `/v1/spaces/{id}/api/*` to the space's own process over its unix socket, untouched:
 * same method, path, headers and body bytes, so the owner's signature verifies there as it
 * would here. Hop-by-hop headers are the only ones dropped.
 */
import { request, type IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { OcsError } from '@ocs/protocol';
import type { Logger } from '../logger.js';

export interface Forwarder {
  forward(ctx: Context, spaceId: string): Promise<void>;
}

export interface SocketSource {
  ensure(spaceId: string): Promise<string>;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
]);

export function createForwarder(processes: SocketSource, logger: Logger, timeoutMs = 120_000): Forwarder {
  async function once(ctx: Context, socketPath: string): Promise<IncomingMessage> {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(ctx.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath, method: ctx.method, path: ctx.originalUrl, headers, timeout: timeoutMs },
        resolve,
      );
      req.once('error', reject);
      req.once('timeout', () => req.destroy(new Error('space process timed out')));
      ctx.req.pipe(req);
    });
  }

  return {
    async forward(ctx, spaceId) {
      let res: IncomingMessage;
      try {
        res = await once(ctx, await processes.ensure(spaceId));
      } catch (err) {
        if (err instanceof OcsError) throw err;
        logger.warn({ err, spaceId }, 'forwarding to space process failed');
        throw new OcsError('unavailable', 'the space API is not reachable; retry shortly');
      }
      ctx.status = res.statusCode ?? 502;
      for (const [k, v] of Object.entries(res.headers))
        if (v !== undefined && !HOP_BY_HOP.has(k)) ctx.set(k, v as string | string[]);
      ctx.body = res;
    },
  };
}
