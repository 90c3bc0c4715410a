/**
 * One broker socket per running space process. The socket sits in the space's run directory
 * (0700, the space's uid) and is itself 0600 and the space's, so only that uid (and root) can
 * connect: whoever talks on it *is* that space, and the space id is bound to the server, never
 * read from the request.
 *
 * Wire: `POST /<op>` with a JSON body; 200 with the JSON result, or the error body with its
 * status. Plain node:http: the space process is the only client, and nothing here needs Koa.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BROKER_BODY_LIMIT, OcsError, isOcsError } from '@ocs/protocol';
import type { Logger } from '../logger.js';
import type { Broker } from './broker.js';

export interface BrokerSocket {
  close(): Promise<void>;
}

export async function openBrokerSocket(o: {
  broker: Broker;
  spaceId: string;
  path: string;
  uid: number;
  logger: Logger;
}): Promise<BrokerSocket> {
  const server: Server = createServer((req, res) => {
    void handle(o, req, res);
  });
  // A stuck space process must not pin broker sockets forever.
  server.requestTimeout = 10 * 60_000;
  server.headersTimeout = 10_000;
  // Bound, chowned and chmodded in a root-only directory, then renamed into the space's own
  // directory: there, between a listen and a chown, the space could swap the socket for a link
  // and have root chown whatever it points to. rename(2) never follows a link.
  const staging = join(dirname(dirname(o.path)), '.staging');
  await mkdir(staging, { recursive: true, mode: 0o700 });
  const bound = join(staging, `${o.spaceId}-${randomBytes(6).toString('hex')}.sock`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(bound, () => resolve());
  });
  await chown(bound, o.uid, o.uid);
  await chmod(bound, 0o600);
  await rename(bound, o.path);
  const ino = (await lstat(o.path)).ino;
  return {
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      // Only our own socket: a newer one for the same space may already sit at this path.
      const now = await lstat(o.path).catch(() => undefined);
      if (now?.ino === ino) await rm(o.path, { force: true });
    },
  };
}

async function handle(
  o: { broker: Broker; spaceId: string; logger: Logger },
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  try {
    if (req.method !== 'POST') throw new OcsError('method_not_allowed', 'the broker takes POST only');
    const op = (req.url ?? '').replace(/^\//, '');
    const args = await readJson(req);
    const result = await o.broker.call(o.spaceId, op, args);
    send(res, 200, result);
  } catch (err) {
    const e = isOcsError(err) ? err : new OcsError('internal', 'internal error');
    if (!isOcsError(err)) o.logger.error({ err, spaceId: o.spaceId }, 'broker request failed');
    send(res, e.status, e.toBody());
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BROKER_BODY_LIMIT) throw new OcsError('body_too_large', 'the broker request is too large');
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new OcsError('invalid_request', 'the broker request is not JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.length });
  res.end(bytes);
}
