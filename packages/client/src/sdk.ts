/**
 * The TypeScript SDK: talks to one node over pinned, keep-alive TLS, attaches a fresh token to
 * every request, and signs with the owner key where the route needs it. Typed operations
 * (`client.spaces.reserve`, `client.space(id).containers.create`, …) are in resources.ts; this
 * is the request layer under them, and `call`/`send` for any path.
 *
 * Retries: a request that fails on a connection the server had already closed is sent again
 * (it never reached the server); GETs, and reservations under their idempotency key, are also
 * retried on connection errors, with backoff. Each attempt is signed anew (a signature is good
 * once). A certificate that does not match the pin is never retried.
 */
import { createHash, createPrivateKey, sign as nativeSign, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Agent } from 'node:http';
import type { Readable } from 'node:stream';
import {
  OcsError,
  contentDigest,
  isErrorCode,
  NODE_HEADER,
  nodeRoute,
  signRequest,
  type Ed25519PrivateKey,
  type ErrorBody,
} from '@ocs/protocol';
import { nativeHashes } from '@ocs/protocol/node';
import { PinMismatchError, normalizeFingerprint, pinnedAgent, send, type RawResponse } from './transport.js';

export interface ClientOptions {
  /** https://host:port of the node daemon. */
  url: string;
  /** The node's certificate (PEM) to trust; or pin by fingerprint below (or both). */
  ca?: string;
  /** SHA-256 fingerprint of the node's certificate, as `GET /v1/node` and the daemon print it. */
  fingerprint?: string;
  /** Returns a fresh bearer token for each request (tokens are short-lived). */
  token?: () => string | Promise<string>;
  /** The owner key for signed requests. */
  ownerKey?: Ed25519PrivateKey;
  timeoutMs?: number;
  /** Attempts after the first for a retryable failure (default 3). */
  retries?: number;
  /** Connections kept open to the node at most (default 8). */
  maxSockets?: number;
}

export interface OcsResponse<T = unknown> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

/** A request body streamed from a file: hashed first (for its Content-Digest), then sent. */
export interface FileBody {
  path: string;
}

export interface CallOptions {
  /** Sign with the owner key (default: whenever an owner key is configured). */
  sign?: boolean;
  headers?: Record<string, string>;
  /** Raw body bytes (e.g. an image tarball) instead of JSON. */
  raw?: Uint8Array;
  /** A body streamed from a file (never held in memory whole). */
  file?: FileBody;
  /**
   * A body made as it is sent (a space archive a node streams to another), without a
   * Content-Digest: only for routes whose body checks itself. Made anew for each attempt.
   */
  source?: () => Readable;
  contentType?: string;
  /** Safe to send again after a connection error (GETs are, whatever this says). */
  idempotent?: boolean;
  /** Bytes of the body sent so far, and the total. */
  onProgress?: (sent: number, total: number) => void;
}

const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The request layer; {@link OcsClient} (resources.ts) adds the typed operations. */
export class BaseClient {
  private readonly agent: Agent;
  private readonly digests = new Map<string, { digest: string; size: number; mtimeMs: number }>();

  constructor(readonly options: ClientOptions) {
    this.agent = pinnedAgent(options, {
      maxSockets: options.maxSockets,
      onConnect: (fingerprint) => {
        this.connections++;
        this.presented = fingerprint;
      },
    });
  }

  /** The fingerprint of the certificate the node last presented (and the pin or CA accepted). */
  private presented?: string;

  /**
   * The node a signature names (`ocs-node`): the pinned fingerprint, or, pinned by a CA only,
   * the certificate the node presented, learned on a first unsigned request.
   */
  private async nodeFingerprint(): Promise<string> {
    if (this.options.fingerprint) return normalizeFingerprint(this.options.fingerprint);
    if (this.presented === undefined) await this.send('GET', nodeRoute('health').path, undefined, { sign: false });
    if (this.presented === undefined) throw new Error("the node's certificate could not be read");
    return this.presented;
  }

  /** TLS connections opened so far (each a handshake): with keep-alive, far fewer than requests. */
  connections = 0;
  /** The owner key as Node's native Ed25519 (about ten times the pure-JS signer's speed). */
  private native?: { of: Ed25519PrivateKey; key: KeyObject };

  private signer(key: Ed25519PrivateKey): (m: Uint8Array) => Uint8Array {
    if (this.native?.of !== key) this.native = { of: key, key: createPrivateKey(key.toPkcs8Pem()) };
    const k = this.native.key;
    return (m) => new Uint8Array(nativeSign(null, m, k));
  }

  /** Performs a call; refusals are thrown as OcsError with the server's code. */
  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    opts: CallOptions = {},
  ): Promise<OcsResponse<T>> {
    const res = await this.send(method, path, body, opts);
    if (res.status >= 400) throw refusal(res);
    return res as OcsResponse<T>;
  }

  /**
   * A GET whose success is a stream (a space archive): handed on unread, for the caller to
   * consume; a refusal is thrown as OcsError like any other.
   */
  async download(path: string, opts: Pick<CallOptions, 'headers'> & { accept: string }): Promise<Readable> {
    const res = await this.send('GET', path, undefined, { ...opts, stream: true });
    if (res.status >= 400 || !res.stream) throw refusal(res);
    return res.stream;
  }

  /** Like call, but returns refusals instead of throwing (tests and scripts inspect them). */
  async send(
    method: string,
    path: string,
    body?: unknown,
    opts: CallOptions & { stream?: boolean; accept?: string } = {},
  ): Promise<OcsResponse & { stream?: Readable }> {
    const url = new URL(path, this.options.url);
    const upload = opts.file ? await this.fileDigest(opts.file.path) : undefined;
    const bytes = opts.raw ?? (body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body)));
    const retryable = method === 'GET' || opts.idempotent === true;
    const retries = this.options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {
        accept: opts.accept ?? 'application/json',
        host: url.host,
        ...opts.headers,
      };
      if (upload) {
        headers['content-type'] = opts.contentType ?? 'application/octet-stream';
        headers['content-length'] = String(upload.size);
        headers['content-digest'] = upload.digest;
      } else if (opts.source) {
        headers['content-type'] = opts.contentType ?? 'application/octet-stream';
      } else if (bytes) {
        headers['content-type'] = opts.contentType ?? (opts.raw ? 'application/octet-stream' : 'application/json');
        headers['content-length'] = String(bytes.length);
        headers['content-digest'] = contentDigest(bytes, 'sha-256', nativeHashes);
      }
      if (this.options.token) headers.authorization = `Bearer ${await this.options.token()}`;
      const key = this.options.ownerKey;
      if (key && (opts.sign ?? true)) {
        headers[NODE_HEADER] = await this.nodeFingerprint();
        Object.assign(
          headers,
          await signRequest(
            { method, url: url.toString(), headers },
            { keyId: key.publicKey.fingerprint(), sign: this.signer(key) },
          ),
        );
      }
      const total = upload?.size ?? bytes?.length ?? Number(headers['content-length'] ?? 0);
      try {
        const res = await send(this.agent, {
          url,
          method,
          headers,
          body: upload ? (): Readable => createReadStream(opts.file!.path) : (opts.source ?? bytes),
          timeoutMs: this.options.timeoutMs ?? 120_000,
          ...(opts.onProgress ? { onProgress: (sent: number) => opts.onProgress!(sent, total) } : {}),
          ...(opts.stream ? { stream: true } : {}),
        });
        if (res.stream) return { status: res.status, headers: res.headers, body: undefined, stream: res.stream };
        return decode(res);
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
        if (e instanceof PinMismatchError || attempt >= retries) throw err;
        // The server had closed a kept-alive connection as we wrote on it: it never saw the request.
        const stale = e.reusedSocket === true && (e.code === 'ECONNRESET' || e.message === 'socket hang up');
        const network = NETWORK_ERRORS.has(e.code ?? '') || e.message === 'socket hang up';
        if (!stale && !(retryable && network)) throw err;
        if (!stale) await sleep(100 * 2 ** attempt);
      }
    }
  }

  /** Closes the connections kept to the node. */
  close(): void {
    this.agent.destroy();
  }

  /** SHA-256 Content-Digest of a file, read as a stream; remembered while the file is unchanged. */
  private async fileDigest(path: string): Promise<{ digest: string; size: number }> {
    const st = await stat(path);
    if (!st.isFile()) throw new OcsError('invalid_request', `${path} is not a regular file`);
    const known = this.digests.get(path);
    if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) return known;
    const h = createHash('sha256');
    for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
    const d = { digest: `sha-256=:${h.digest('base64')}:`, size: st.size, mtimeMs: st.mtimeMs };
    this.digests.set(path, d);
    return d;
  }
}

function decode(res: RawResponse): OcsResponse {
  const text = res.body.toString('utf8');
  const type = String(res.headers['content-type'] ?? '');
  let parsed: unknown = text;
  if (type.includes('json') && text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** A refusal as the OcsError the server meant (its code, message and details). */
export function refusal(res: OcsResponse): OcsError {
  const err = (res.body as ErrorBody | undefined)?.error;
  if (err && isErrorCode(err.code)) return new OcsError(err.code, err.message, err.details);
  return new OcsError('internal', `unexpected ${res.status} from the node`);
}
