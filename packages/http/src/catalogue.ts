/**
 * Binds a catalogue of routes (protocol/src/routes.ts) to a Koa router, the same way on both
 * servers: each entry once, its body framing and media type checked before anything else, and
 * a path that exists under another method answered `405 method_not_allowed`.
 */
import type Router from '@koa/router';
import type { Context } from 'koa';
import { OcsError, type RouteSpec } from '@ocs/protocol';
import { refuseBodyOnBodiless, requireMediaType } from './body.js';

/** Koa's path syntax for a catalogue path: `/spaces/{spaceId}` → `/spaces/:spaceId`. */
export const routerPath = (path: string): string => path.replace(/\{(\w+)\}/g, ':$1');

export function bindCatalogue<S extends RouteSpec>(
  router: Router,
  specs: readonly S[],
  handle: (spec: S, ctx: Context) => Promise<void>,
): void {
  for (const spec of specs) {
    const method = spec.method.toLowerCase() as 'get' | 'post' | 'delete' | 'put' | 'patch';
    router[method](routerPath(spec.path), async (ctx: Context) => {
      refuseBodyOnBodiless(ctx);
      if (spec.body) requireMediaType(ctx, spec.body === 'binary' ? 'binary' : 'json');
      await handle(spec, ctx);
    });
  }
}

/** After the routes: a known path with another method is 405, an unknown one falls through to 404. */
export function methodNotAllowed(router: Router) {
  return router.allowedMethods({
    throw: true,
    methodNotAllowed: () => new OcsError('method_not_allowed', 'method not allowed on this path'),
    notImplemented: () => new OcsError('method_not_allowed', 'method not implemented'),
  });
}
