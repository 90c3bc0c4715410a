/**
 * Every failure becomes `{ error: { code, message } }` with its status. Only OcsErrors are shown
 * as they are; anything else is `internal` with a generic message, and its detail goes to the
 * log only. Nothing either server answers is stored by a cache on the way: answers carry
 * wrapped keys, tokens' effects and tenants' data.
 */
import type { Context, Next } from 'koa';
import { OcsError, isOcsError } from '@ocs/protocol';

/** The part of a pino logger the pipeline writes to. */
export interface PipelineLogger {
  error(obj: object, msg: string): void;
}

/**
 * The outermost middleware of both servers. `onRefusal` records a refusal (the daemon's audit
 * chain and metrics, the space's journal); recording never turns a refusal into a 500.
 */
export function errorMiddleware(
  logger: PipelineLogger,
  onRefusal?: (ctx: Context, err: OcsError) => void | Promise<void>,
) {
  return async (ctx: Context, next: Next): Promise<void> => {
    ctx.set('cache-control', 'no-store');
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new OcsError('not_found', 'no such route');
      if (ctx.status === 405 && ctx.body === undefined)
        throw new OcsError('method_not_allowed', 'method not allowed on this path');
    } catch (err) {
      const e = isOcsError(err) ? err : new OcsError('internal', 'internal error');
      if (!isOcsError(err)) logger.error({ err, method: ctx.method, path: ctx.path }, 'request failed');
      else {
        try {
          await onRefusal?.(ctx, e);
        } catch (recordErr) {
          logger.error({ err: recordErr, code: e.code }, 'recording a refusal failed');
        }
      }
      ctx.status = e.status;
      ctx.body = e.toBody();
      ctx.set('cache-control', 'no-store');
    }
  };
}

/** What a client going away mid-response looks like from the server: routine, not a failure. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * Errors Koa reports itself, after the response began (a streamed body cut short): to the log,
 * never Koa's default of printing to stderr. A client that went away is logged at debug.
 */
export function logResponseErrors(
  app: { on(event: 'error', listener: (err: NodeJS.ErrnoException) => void): unknown },
  logger: PipelineLogger & { debug(obj: object, msg: string): void },
): void {
  app.on('error', (err) => {
    if (CLIENT_GONE.has(err.code ?? '')) logger.debug({ err }, 'the client went away during the response');
    else logger.error({ err }, 'the response failed after it began');
  });
}
