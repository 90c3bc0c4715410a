/**
 * The names a node answers to when the operator lists none: loopback, its hostname and every
 * address of its own interfaces. None of them names another node, which is what matters: a
 * request signed for node A (its address or name in `@target-uri`) is refused by node B.
 */
import { hostname, networkInterfaces } from 'node:os';

export function defaultPublicNames(listenHost: string): string[] {
  const names = new Set(['localhost', '127.0.0.1', '::1', hostname()]);
  if (listenHost !== '0.0.0.0' && listenHost !== '::') names.add(listenHost);
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (!a.address.startsWith('fe80:')) names.add(a.address);
  }
  return [...names];
}
