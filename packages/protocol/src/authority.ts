/**
 * The authority a request names (its `Host`) must be one of this node's own public names: the
 * signature covers `@target-uri`, built from `Host`, so a request captured on one node and sent
 * to another would otherwise verify there too (tokens may carry the cluster audience).
 */
import { OcsError } from './errors.js';

/** `host:port`, lower-cased, port explicit (443 when absent); undefined when it is not a bare authority. */
export function normalizeAuthority(value: string, defaultPort = 443): string | undefined {
  const m = /^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})?)(?::([0-9]{1,5}))?$/.exec(value);
  if (!m) return undefined;
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (!(port >= 1 && port <= 65535)) return undefined;
  return `${m[1]!.toLowerCase().replace(/\.$/, '')}:${port}`;
}

/** The set of accepted authorities from names with or without a port (`port` for those without). */
export function authoritySet(names: readonly string[], port: number): Set<string> {
  const out = new Set<string>();
  for (const n of names) {
    // A bare IPv6 address (two or more colons) is bracketed, as it would be in a Host header.
    const a = normalizeAuthority(!n.startsWith('[') && n.split(':').length > 2 ? `[${n}]` : n, port);
    if (a !== undefined) out.add(a);
  }
  return out;
}

/** Throws `misdirected_request` unless `host` names one of `allowed` (`invalid_request` when there is none). */
export function checkAuthority(host: string | undefined, allowed: ReadonlySet<string>): void {
  if (host === undefined || host === '') throw new OcsError('invalid_request', 'the request has no Host header');
  const a = normalizeAuthority(host);
  if (a === undefined || !allowed.has(a)) {
    throw new OcsError('misdirected_request', "the request's Host is not one of this node's names");
  }
}
