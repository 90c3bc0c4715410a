/**
 * Turns what dockerode throws into our refusals. The engine's own messages are kept out of the
 * message (they can name other spaces' container or image ids, e.g. in a removal conflict) and
 * only passed, trimmed, as `details.reason` where the object is the caller's own and the text
 * helps (a bad command, a refused option).
 */
import { OcsError } from '@ocs/protocol';

/** Socket-level failures: the engine is not there (or not ours to reach). */
const UNREACHABLE = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EACCES', 'ETIMEDOUT', 'ENOTSOCK']);

interface DockerodeError {
  statusCode?: number;
  code?: string;
  reason?: string;
  json?: unknown;
  message?: string;
}

/** Status code of a dockerode error, or undefined for anything else. */
export function statusOf(err: unknown): number | undefined {
  const s = (err as DockerodeError | null)?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

/** The engine's message for the error, trimmed; never put in an error message, only in details. */
export function dockerReason(err: unknown): string {
  const e = err as DockerodeError | null;
  const json = e?.json as { message?: unknown } | null | undefined;
  const text = typeof json?.message === 'string' ? json.message : typeof e?.message === 'string' ? e.message : '';
  return text.replace(/\s+/g, ' ').trim().slice(0, 500);
}

export function isUnreachable(err: unknown): boolean {
  const code = (err as DockerodeError | null)?.code;
  return typeof code === 'string' && UNREACHABLE.has(code);
}

function withCause(e: OcsError, cause: unknown): OcsError {
  e.cause = cause;
  return e;
}

/**
 * Maps an error from a Docker call. `what` names the operation for the message ("start the
 * container"); `reason` says whether the engine's text may go into details.
 */
export function toOcsError(err: unknown, what: string, opts: { reason?: boolean } = {}): Error {
  if (err instanceof OcsError) return err;
  if (isUnreachable(err)) return withCause(new OcsError('unavailable', 'the container engine is unreachable'), err);
  const details = opts.reason ? { reason: dockerReason(err) } : undefined;
  const status = statusOf(err);
  if (status === 400)
    return withCause(new OcsError('invalid_request', `the container engine refused to ${what}`, details), err);
  if (status === 404) return withCause(new OcsError('not_found', `not found: could not ${what}`), err);
  if (status === 403 || status === 409) {
    return withCause(new OcsError('conflict', `could not ${what}: it is in use or already exists`, details), err);
  }
  // Not a refusal the caller can act on: an internal error, logged by the caller with its cause.
  const e = new Error(`docker: could not ${what}: ${dockerReason(err)}`);
  e.cause = err;
  return e;
}
