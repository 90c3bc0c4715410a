import type { Context } from 'koa';
import getRawBody from 'raw-body';
import { OcsError } from '@ocs/protocol';

/** Methods whose requests carry no body, on either API. */
export const BODILESS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS']);

/**
 * Refuses a body on a method that takes none, before anything reads or checks it: the daemon's
 * own routes and the forwarder to the space processes answer the same (a DELETE with a body,
 * whatever its Content-Digest says, is `invalid_request`, never quietly done).
 */
export function refuseBodyOnBodiless(ctx: Context): void {
  const te = ctx.get('transfer-encoding');
  const cl = ctx.get('content-length');
  if (BODILESS.has(ctx.method) && (te !== '' || (cl !== '' && cl !== '0'))) {
    throw new OcsError('invalid_request', `${ctx.method} requests take no body`);
  }
}

/** Reads the whole body with a hard limit; the digest check needs the exact bytes. */
export async function readBody(ctx: Context, limit: number): Promise<Uint8Array> {
  try {
    const buf = await getRawBody(ctx.req, { limit, length: ctx.get('content-length') || undefined });
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (err) {
    const type = (err as { type?: string }).type;
    if (type === 'entity.too.large') throw new OcsError('body_too_large', `the body is over ${limit} bytes`);
    throw new OcsError('invalid_request', 'the body could not be read');
  }
}

export function parseJson(body: Uint8Array): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new OcsError('invalid_request', 'the body is not valid UTF-8 JSON');
  }
}
