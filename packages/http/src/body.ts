/**
 * Request bodies as both servers read them: none on a method that takes none, the exact bytes
 * up to a limit (the Content-Digest check needs them), JSON only in UTF-8 and only when the
 * request says it is JSON.
 */
import type { Context } from 'koa';
import { OcsError } from '@ocs/protocol';

/** How long a JSON body (at most tens of KiB) may take to arrive whole. */
export const BODY_DEADLINE_MS = 30_000;

/** Methods whose requests carry no body, on either API. */
export const BODILESS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS']);

/**
 * Refuses a body on a method that takes none, before anything reads or checks it: the daemon's
 * own routes, the forwarder and the space process answer the same (a DELETE with a body,
 * whatever its Content-Digest says, is `invalid_request`, never quietly done).
 */
export function refuseBodyOnBodiless(ctx: Context): void {
  const te = ctx.get('transfer-encoding');
  const cl = ctx.get('content-length');
  if (BODILESS.has(ctx.method) && (te !== '' || (cl !== '' && cl !== '0'))) {
    throw new OcsError('invalid_request', `${ctx.method} requests take no body`);
  }
}

/**
 * Reads the whole body with a hard limit. Hand-written rather than raw-body: that package pulls
 * in a 480 KB charset library neither server needs, and every start of an idle space pays for it.
 */
export async function readBody(ctx: Context, limit: number, deadlineMs = BODY_DEADLINE_MS): Promise<Uint8Array> {
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > limit) throw new OcsError('body_too_large', `the body is over ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  // A small body arrives at once or not at all: a client that drips it holds the connection
  // no longer than this (the servers set no whole-request deadline, for the archive streams).
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    ctx.req.destroy();
  }, deadlineMs);
  try {
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new OcsError('body_too_large', `the body is over ${limit} bytes`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof OcsError) throw err;
    throw new OcsError(
      'invalid_request',
      late ? `the body was not received within ${deadlineMs / 1000} s` : 'the body could not be read',
    );
  } finally {
    clearTimeout(timer);
  }
  if (late) throw new OcsError('invalid_request', `the body was not received within ${deadlineMs / 1000} s`);
  const b = Buffer.concat(chunks);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** JSON in UTF-8, strictly: a body with invalid UTF-8 is refused, never decoded with replacement characters. */
export function parseJson(body: Uint8Array): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(body));
  } catch {
    throw new OcsError('invalid_request', 'the body is not valid UTF-8 JSON');
  }
}

/** What a route's body is: JSON by its schema, or opaque bytes (uploads). */
export type BodyKind = 'json' | 'binary';

const JSON_TYPE = /^application\/(?:[a-z0-9.+-]+\+)?json$/;

/**
 * The request's media type must be the route's (RFC 9110 §15.5.16): a JSON route with a body
 * takes `application/json` (or a `+json` type), in UTF-8 if a charset is named; an upload takes
 * anything but a type that says it is text or a form, which would be a client sending the
 * wrong thing. A body without a Content-Type is, by RFC 9110 §8.3, octet-stream: fine for an
 * upload, not JSON.
 */
export function requireMediaType(ctx: Context, kind: BodyKind): void {
  const header = ctx.get('content-type');
  const [type = '', ...params] = header.split(';').map((p) => p.trim().toLowerCase());
  if (kind === 'json') {
    const hasBody = ctx.get('transfer-encoding') !== '' || Number(ctx.get('content-length') || 0) > 0;
    if (!hasBody) return;
    const charset = params
      .find((p) => p.startsWith('charset='))
      ?.slice(8)
      .replace(/"/g, '');
    if (JSON_TYPE.test(type) && (charset === undefined || charset === 'utf-8')) return;
    throw new OcsError('unsupported_media_type', 'this route takes application/json (UTF-8)', {
      contentType: header.slice(0, 64),
    });
  }
  if (type.startsWith('text/') || type === 'application/x-www-form-urlencoded' || type.startsWith('multipart/'))
    throw new OcsError('unsupported_media_type', 'this route takes the raw bytes (application/octet-stream)', {
      contentType: header.slice(0, 64),
    });
}
