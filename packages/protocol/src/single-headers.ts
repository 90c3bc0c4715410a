/**
 * Header fields a request may carry at most once. Node's HTTP parser keeps the first of two
 * `Authorization` (or `Host`) lines and silently drops the other, so a server that reads
 * `req.headers` checks one token while a proxy or log in front of it may have used the other.
 * The raw header lines are the only place both are still visible: refuse there.
 */
import { OcsError } from './errors.js';

/** RFC 9110 defines no list syntax for these; RFC 9112 section 3.2 makes a second Host a 400. */
export const SINGLE_HEADERS = ['authorization', 'host'] as const;

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
