/**
 * HTTPS to one node over keep-alive connections, pinned to the node's certificate.
 *
 * TLS first, request second: a connection is handed to a request only after its handshake
 * completed and the certificate matched (the CA given, or the pinned SHA-256 fingerprint), so
 * not a byte of a request (its token included) is ever written to a server that is not the
 * node. Connections are then reused, which saves the handshake on every later request.
 */
import { Agent, request, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { connect, type TLSSocket } from 'node:tls';
import { isIP, type Socket } from 'node:net';
import type { Readable } from 'node:stream';

export interface PinOptions {
  /** The node's certificate (PEM) to trust. */
  ca?: string;
  /** SHA-256 fingerprint of the node's certificate (`AB:CD:…`), as `GET /v1/node` and the daemon print it. */
  fingerprint?: string;
}

/** The certificate did not match: never retried, never worked around. */
export class PinMismatchError extends Error {
  readonly code = 'ERR_OCS_PIN_MISMATCH';
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`the node's certificate does not match the pinned fingerprint (pinned ${expected}, got ${actual})`);
    this.name = 'PinMismatchError';
  }
}

export const normalizeFingerprint = (f: string): string => f.replace(/^SHA256:/i, '').toUpperCase();

/** An agent whose connections are pinned TLS sockets. */
export function pinnedAgent(
  pin: PinOptions,
  opts: { maxSockets?: number; onConnect?: (fingerprint: string) => void } = {},
): Agent {
  if (!pin.ca && !pin.fingerprint) throw new Error('give the node certificate (ca) or its fingerprint to pin');
  const expected = pin.fingerprint ? normalizeFingerprint(pin.fingerprint) : undefined;
  const agent = new Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 8, scheduling: 'lifo' });
  // Node's agent accepts a socket handed over later through the callback (documented).
  (agent as unknown as { createConnection: unknown }).createConnection = (
    o: { host?: string; port?: number | string },
    done: (err: Error | null, socket?: Socket) => void,
  ) => {
    const host = o.host ?? 'localhost';
    const socket: TLSSocket = connect(
      {
        host,
        port: Number(o.port ?? 443),
        ...(isIP(host) ? {} : { servername: host }),
        ...(pin.ca ? { ca: pin.ca, rejectUnauthorized: true } : { rejectUnauthorized: false }),
        // With a CA, a pinned fingerprint replaces the host name check: the certificate is exactly
        // the node's, whatever names it carries.
        ...(pin.ca && expected ? { checkServerIdentity: () => undefined } : {}),
      },
      () => {
        const actual = normalizeFingerprint(socket.getPeerCertificate().fingerprint256 ?? '');
        if (expected && actual !== expected) {
          socket.destroy();
          done(new PinMismatchError(expected, actual));
          return;
        }
        opts.onConnect?.(actual);
        done(null, socket);
      },
    );
    socket.once('error', (err) => done(err));
    return undefined;
  };
  return agent;
}

export interface RawResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** The request went out on a reused connection (a reset then means the server had closed it). */
  reusedSocket: boolean;
  /** With `stream`: the body of a success, unread (`body` is then empty). */
  stream?: IncomingMessage;
}

export interface RawRequest {
  url: URL;
  method: string;
  headers: OutgoingHttpHeaders;
  body?: Uint8Array | (() => Readable);
  timeoutMs: number;
  /** Bytes of the body written so far, as they go. */
  onProgress?: (sent: number) => void;
  /** Hand a success's body on unread, as a stream (an archive); a refusal is still read whole. */
  stream?: boolean;
}

/** One request on the agent; resolves with the whole response body (responses are small JSON), or a success's stream. */
export function send(agent: Agent, r: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        host: r.url.hostname,
        port: Number(r.url.port || 443),
        method: r.method,
        path: `${r.url.pathname}${r.url.search}`,
        headers: r.headers,
        timeout: r.timeoutMs,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        if (r.stream && status < 400) {
          resolve({ status, headers: res.headers, body: Buffer.alloc(0), reusedSocket: req.reusedSocket, stream: res });
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status,
            headers: res.headers,
            body: Buffer.concat(chunks),
            reusedSocket: req.reusedSocket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
      err.reusedSocket = req.reusedSocket;
      reject(err);
    });
    if (r.body === undefined) return void req.end();
    if (r.body instanceof Uint8Array) return void req.end(r.body);
    const stream = r.body();
    let sent = 0;
    stream.on('data', (c: Buffer) => {
      sent += c.length;
      r.onProgress?.(sent);
    });
    stream.on('error', (err) => req.destroy(err));
    stream.pipe(req);
  });
}
