/**
 * Header fields a request may carry at most once. Node's HTTP parser keeps the first of two
 * `Authorization` (or `Host`) lines and silently drops the other, so a server that reads
 * `req.headers` checks one token while a proxy or log in front of it may have used the other.
 * The raw header lines are the only place both are still visible: refuse there.
 */
import { OcsError } from './errors.js';

/**
 * RFC 9110 defines no list syntax for Authorization; RFC 9112 section 3.2 makes a second Host a
 * 400. The signature fields are dictionaries a second line could extend or override (a second
 * `sig1` wins over the first), Idempotency-Key (signed when present) decides which stored
 * answer a request gets, and Ocs-Node names the node a signature is for: one line each, or the request is refused as malformed.
 */
export const SINGLE_HEADERS = [
  'authorization',
  'host',
  'signature',
  'signature-input',
  'content-digest',
  'idempotency-key',
  'ocs-node',
] as const;

/** Throws invalid_request naming the first field of `names` that `rawHeaders` (Node's flat list) repeats. */
export function refuseRepeatedHeaders(rawHeaders: readonly string[], names: readonly string[] = SINGLE_HEADERS): void {
  const seen = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (!names.includes(name)) continue;
    if (seen.has(name)) throw new OcsError('invalid_request', `header ${name} given more than once`, { header: name });
    seen.add(name);
  }
}
