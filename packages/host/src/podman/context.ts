/**
 * What the parts of the driver share: the dockerode clients of the space's engine (its
 * Docker-compatible API and podman's own), the options, a per-key lock, and a wrapper that turns
 * dockerode failures into our refusals.
 */
import type Dockerode from 'dockerode';
import { toOcsError } from './errors.js';
import type { IdMap } from './hardening.js';

export interface DriverContext {
  docker: Dockerode;
  tmpDir: string | undefined;
  maxImageBytes: number;
  cgroupRoot: string;
  /** The space's podman: creates go through libpod with the space's id map, its network gets the subnet. */
  podman: { idMap: IdMap; subnet: string; networksDir: string; libpod: Dockerode };
  /** Runs `fn` after every earlier call with the same key has settled (a `KeyedLock`). */
  serialize<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

/** Awaits a Docker call; failures become `OcsError`s (see {@link toOcsError}). */
export async function call<T>(what: string, fn: () => Promise<T>, opts: { reason?: boolean } = {}): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toOcsError(err, what, opts);
  }
}

/**
 * A call to podman's own (libpod) API, through a second dockerode client whose version prefix
 * is podman's (libpod routes refuse a Docker API version).
 */
export function libpod<T>(
  ctx: DriverContext,
  method: 'POST' | 'GET' | 'DELETE',
  path: string,
  body?: Record<string, unknown>,
): Promise<T> {
  return new Promise((resolve, reject) => {
    ctx.podman.libpod.modem.dial(
      {
        path: `/libpod${path}`,
        method,
        ...(body !== undefined ? { options: body } : {}),
        statusCodes: {
          200: true,
          201: true,
          204: true,
          400: 'bad request',
          404: 'not found',
          409: 'conflict',
          500: 'server error',
        },
      },
      (err: unknown, data: unknown) => (err ? reject(err) : resolve(data as T)),
    );
  });
}
