/**
 * The TypeScript SDK: talks to a node over TLS (pinned to the node's certificate), attaches a
 * token, and signs with the owner key where the route needs it. The `ocs` CLI is built on this.
 */
import { request as httpRequest, type RequestOptions } from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { isIP } from 'node:net';
import { createHash } from 'node:crypto';
import {
  OcsError,
  contentDigest,
  isErrorCode,
  signRequest,
  type Ed25519PrivateKey,
  type ErrorBody,
} from '@ocs/protocol';

export interface ClientOptions {
  /** https://host:port of the node daemon. */
  url: string;
  /** The node's certificate (PEM) to trust; or pin by fingerprint below. */
  ca?: string;
  /** SHA-256 fingerprint of the node's certificate, as `GET /v1/node` and the daemon print it. */
  fingerprint?: string;
  /** Returns a fresh bearer token for each request (tokens are short-lived). */
  token?: () => string | Promise<string>;
  /** The owner key for signed requests. */
  ownerKey?: Ed25519PrivateKey;
  timeoutMs?: number;
}

export interface OcsResponse<T = unknown> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

export interface CallOptions {
  /** Sign with the owner key (default: whenever an owner key is configured). */
  sign?: boolean;
  headers?: Record<string, string>;
  /** Raw body bytes (e.g. an image tarball) instead of JSON. */
  raw?: Uint8Array;
  contentType?: string;
}

export class OcsClient {
  constructor(private readonly o: ClientOptions) {}

  /** Performs a call; refusals are thrown as OcsError with the server's code. */
  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    opts: CallOptions = {},
  ): Promise<OcsResponse<T>> {
    const res = await this.send(method, path, body, opts);
    if (res.status >= 400) {
      const err = (res.body as ErrorBody | undefined)?.error;
      if (err && isErrorCode(err.code)) throw new OcsError(err.code, err.message, err.details);
      throw new OcsError('internal', `unexpected ${res.status} from the node`);
    }
    return res as OcsResponse<T>;
  }

  /** Like call, but returns refusals instead of throwing (tests and scripts inspect them). */
  async send(method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<OcsResponse> {
    const url = new URL(path, this.o.url);
    const bytes = opts.raw ?? (body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body)));
    const headers: Record<string, string> = { accept: 'application/json', host: url.host, ...opts.headers };
    if (bytes) {
      headers['content-type'] = opts.contentType ?? (opts.raw ? 'application/octet-stream' : 'application/json');
      headers['content-length'] = String(bytes.length);
      headers['content-digest'] = contentDigest(bytes, 'sha-256', nodeSha);
    }
    if (this.o.token) headers.authorization = `Bearer ${await this.o.token()}`;
    const key = this.o.ownerKey;
    if (key && (opts.sign ?? true)) {
      Object.assign(
        headers,
        await signRequest(
          { method, url: url.toString(), headers },
          { keyId: key.publicKey.fingerprint(), sign: (m) => key.sign(m) },
        ),
      );
    }
    return this.raw(url, method, headers, bytes);
  }

  /**
   * TLS first, request second: with a pinned fingerprint the handshake completes and the
   * certificate is compared before a single byte of the request (token included) is written.
   */
  private connect(url: URL): Promise<TLSSocket> {
    const pin = this.o.fingerprint?.toUpperCase();
    return new Promise((resolve, reject) => {
      const socket = tlsConnect(
        {
          host: url.hostname,
          port: Number(url.port || 443),
          ...(isIP(url.hostname) ? {} : { servername: url.hostname }),
          ...(this.o.ca ? { ca: this.o.ca, rejectUnauthorized: true } : { rejectUnauthorized: false }),
        },
        () => {
          if (!this.o.ca && socket.getPeerCertificate().fingerprint256?.toUpperCase() !== pin) {
            socket.destroy();
            reject(new Error('the node certificate does not match the pinned fingerprint'));
            return;
          }
          resolve(socket);
        },
      );
      socket.once('error', reject);
    });
  }

  private async raw(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
  ): Promise<OcsResponse> {
    if (!this.o.ca && !this.o.fingerprint) throw new Error('give the node certificate (ca) or its fingerprint to pin');
    const socket = await this.connect(url);
    const opts: RequestOptions = {
      method,
      path: `${url.pathname}${url.search}`,
      headers,
      timeout: this.o.timeoutMs ?? 120_000,
      createConnection: () => socket,
    };
    return new Promise((resolve, reject) => {
      const req = httpRequest(opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          socket.end();
          const text = Buffer.concat(chunks).toString('utf8');
          const type = String(res.headers['content-type'] ?? '');
          let parsed: unknown = text;
          if (type.includes('json') && text) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }
}

const nodeSha = (alg: 'sha-256' | 'sha-512') => {
  const h = createHash(alg === 'sha-256' ? 'sha256' : 'sha512');
  return { update: (d: Uint8Array) => h.update(d), digest: () => new Uint8Array(h.digest()) };
};
