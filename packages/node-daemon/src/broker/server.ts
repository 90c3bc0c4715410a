/**
 * The broker of one running space process, served on the daemon's end of the socket pair made
 * when that process is spawned; the process holds the other end at `BROKER_FD`. The pair
 * has no name in the file system, so there is nothing to connect to: whoever talks on it *is*
 * that space's process, even against another process of the space's uid. The space id is bound
 * to the connection, never read from a request.
 *
 * Wire: `POST /<op>` with a JSON body; 200 with the JSON result, or the error body with its
 * status. HTTP/2, because one connection carries every call and a call that takes seconds (a
 * container's create) must not hold up the others; node:http2's compatibility API, since nothing
 * here needs Koa.
 */
import {
  constants,
  createServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
} from 'node:http2';
import type { Socket } from 'node:net';
import { BROKER_BODY_LIMIT, OcsError, isOcsError } from '@ocs/protocol';
import type { Logger } from '../logger.js';
import type { Broker } from './broker.js';

export interface BrokerConnection {
  /** Ends every call in flight and the connection; the space process has exited, or is being killed. */
  close(): void;
}

/** Receiving one whole request: a stuck or hostile space process must not pin a stream forever. */
const REQUEST_TIMEOUT_MS = 10 * 60_000;
/** Streams at once: the space process's client queues beyond it, a hostile one is refused. */
const MAX_CONCURRENT_STREAMS = 128;

/** Serves the broker for `spaceId` on `socket`, the daemon's end of the space process's pair. */
export function serveBroker(o: { broker: Broker; spaceId: string; socket: Socket; logger: Logger }): BrokerConnection {
  const server = createServer({ settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS } }, (req, res) => {
    void handle(o, req, res);
  });
  let session: Http2Session | undefined;
  server.once('session', (s: Http2Session) => (session = s));
  // A peer that breaks the protocol loses its connection; the log says so, the daemon goes on.
  server.on('sessionError', (err) => o.logger.warn({ err, spaceId: o.spaceId }, 'broker connection failed'));
  server.emit('connection', o.socket);
  return {
    close() {
      session?.destroy();
      o.socket.destroy();
    },
  };
}

async function handle(
  o: { broker: Broker; spaceId: string; logger: Logger },
  req: Http2ServerRequest,
  res: Http2ServerResponse,
): Promise<void> {
  try {
    if (req.method !== 'POST') throw new OcsError('method_not_allowed', 'the broker takes POST only');
    const op = req.url.replace(/^\//, '');
    const args = await readJson(req);
    const result = await o.broker.call(o.spaceId, op, args);
    send(res, 200, result);
  } catch (err) {
    const e = isOcsError(err) ? err : new OcsError('internal', 'internal error');
    if (!isOcsError(err)) o.logger.error({ err, spaceId: o.spaceId }, 'broker request failed');
    send(res, e.status, e.toBody());
  }
}

/**
 * The body, read as it comes: past the limit reading stops and the refusal is sent at once
 * (the stream is then reset, so the client's remaining data goes nowhere).
 */
function readJson(req: Http2ServerRequest): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => req.stream.close(constants.NGHTTP2_CANCEL), REQUEST_TIMEOUT_MS);
    const done = (fn: () => void) => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      fn();
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BROKER_BODY_LIMIT) {
        req.pause();
        done(() => reject(new OcsError('body_too_large', 'the broker request is too large')));
        return;
      }
      chunks.push(chunk);
    });
    // Cut off (the client reset the stream, or its process is gone): no answer will reach it.
    const cut = () => done(() => reject(new OcsError('invalid_request', 'the broker request was cut off')));
    req.once('error', cut);
    req.stream.once('close', cut);
    req.once('end', () =>
      done(() => {
        if (size === 0) return resolve({});
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown);
        } catch {
          reject(new OcsError('invalid_request', 'the broker request is not JSON'));
        }
      }),
    );
  });
}

function send(res: Http2ServerResponse, status: number, body: unknown): void {
  // A stream the client reset, or the connection gone with its process: nobody to answer.
  if (res.stream.destroyed || res.stream.closed) return;
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.length });
  res.end(bytes);
}
