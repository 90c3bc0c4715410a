/**
 * Forwards `/v1/spaces/{id}/api/*` to the space's own process over its unix socket, untouched:
 * same method, path, headers and body bytes, so the owner's signature verifies there as it
 * would here. Hop-by-hop headers are the only ones dropped.
 */
import { Agent, request, type IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { OcsError } from '@ocs/protocol';
import type { Logger } from '../logger.js';
import { BODILESS, refuseBodyOnBodiless } from '@ocs/http';

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

/**
 * One framed request per connection: a body the space process would read as a second request
 * (a chunked GET, say) is refused here, the forwarded request's framing is Node's own
 * (Content-Length, or chunked for a streamed POST), so each use of a kept-alive connection to
 * the space process carries exactly the one request the daemon checked. (Keep-alive, not a
 * connection per request: the space process may refuse before reading a body, and on a closing
 * connection the rest of that body would then fail to write and lose the refusal.)
 */
function checkFraming(ctx: Context): void {
  refuseBodyOnBodiless(ctx);
  const te = ctx.get('transfer-encoding');
  const cl = ctx.get('content-length');
  if (te !== '' && cl !== '') throw new OcsError('invalid_request', 'both Transfer-Encoding and Content-Length');
}

/** Answers up to this size are buffered rather than streamed. */
const BUFFERED_MAX = 256 * 1024;

function readWhole(res: IncomingMessage, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    res.on('data', (c: Buffer) => {
      got += c.length;
      if (got > length) res.destroy(new Error('the space process sent more than it announced'));
      else chunks.push(c);
    });
    res.once('end', () => resolve(Buffer.concat(chunks, got)));
    res.once('error', reject);
  });
}

export function createForwarder(processes: SocketSource, logger: Logger, timeoutMs = 120_000): Forwarder {
  const agent = new Agent({ keepAlive: true, keepAliveMsecs: 5000 });
  async function once(ctx: Context, socketPath: string): Promise<IncomingMessage> {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(ctx.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    if (BODILESS.has(ctx.method)) delete headers['content-length'];
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath, agent, method: ctx.method, path: ctx.originalUrl, headers, timeout: timeoutMs },
        resolve,
      );
      req.once('error', reject);
      req.once('timeout', () => req.destroy(new Error('space process timed out')));
      if (BODILESS.has(ctx.method)) req.end();
      else ctx.req.pipe(req);
    });
  }

  return {
    async forward(ctx, spaceId) {
      checkFraming(ctx);
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
      // A small answer of known length (every JSON answer) is read whole and written in one go:
      // a stream body costs Koa a stream.pipeline, with an AbortController and a DOMException,
      // per request (bench/forward). Anything larger or of unknown length is streamed.
      const length = Number(res.headers['content-length']);
      if (!(Number.isSafeInteger(length) && length <= BUFFERED_MAX)) {
        ctx.body = res;
        return;
      }
      try {
        ctx.body = await readWhole(res, length);
      } catch (err) {
        logger.warn({ err, spaceId }, 'the space process broke off its answer');
        throw new OcsError('unavailable', 'the space API is not reachable; retry shortly');
      }
    },
  };
}
