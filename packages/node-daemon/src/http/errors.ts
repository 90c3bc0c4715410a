import type { Context, Next } from 'koa';
import { OcsError, isOcsError } from '@ocs/protocol';
import type { Logger } from '../logger.js';

/**
 * Turns every failure into `{ error: { code, message } }`. Only OcsErrors are shown as they are;
 * anything else is `internal` with a generic message, and its detail goes to the log only.
 */
export function errorMiddleware(logger: Logger, onRefusal?: (ctx: Context, err: OcsError) => void | Promise<void>) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new OcsError('not_found', 'no such route');
      if (ctx.status === 405 && ctx.body === undefined)
        throw new OcsError('method_not_allowed', 'method not allowed on this path');
    } catch (err) {
      const e = isOcsError(err) ? err : new OcsError('internal', 'internal error');
      if (!isOcsError(err)) logger.error({ err, method: ctx.method, path: ctx.path }, 'request failed');
      else {
        // Recording a refusal must never turn it into a 500: the caller gets its refusal regardless.
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
