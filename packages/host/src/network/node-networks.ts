/**
 * The networks the node itself is on: every IPv4 network of its interfaces but loopback and the
 * spaces' own bridges. No space reaches them, whatever its egress (the issue's "the node's other
 * networks"): the node's LAN, its cloud's VPC, the farmer's management network. What lies beyond
 * their gateways (the internet) is not among them.
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { intToIpv4 as toIp, ipv4ToInt as toInt } from './ipv4.js';

/** `a.b.c.d/n` of each interface address's network, deduplicated, in the order found. */
export function nodeNetworks(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces()): string[] {
  const out = new Set<string>();
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (name.startsWith('ocsbr')) continue;
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || a.internal) continue;
      const bits = Number(a.cidr?.split('/')[1] ?? 32);
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      out.add(`${toIp((toInt(a.address) & mask) >>> 0)}/${bits}`);
    }
  }
  return [...out];
}
