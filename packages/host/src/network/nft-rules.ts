/**
 * The nftables rules of the node and of each space, rendered as `nft -f` scripts. Pure, so a test
 * reads exactly what the kernel is told; every value is checked before it is written into a
 * script (nothing of the owner's reaches nft unchecked).
 *
 * The layout, and why:
 * - One table per space (`inet ocs_<space id>`). A space's rules are made, replaced and removed
 *   as one object, atomically, and what belongs to a space is known by the table's name alone,
 *   which is what lets a restart reconcile (no rule left for a gone space, none missing).
 * - The node's table (`inet ocs`) fails closed: a packet from or to a space bridge whose space has
 *   no table yet is dropped (the `ruled` set holds the bridges that have one), and nothing that
 *   arrives on any space bridge is delivered to the host itself.
 * - Drops are final across tables: an accept in another table (podman's, docker's, libvirt's)
 *   cannot undo ours; an accept of ours only ends our chain.
 * - The bounds on each space's tracked connections live in the node's table, one dynamic set per
 *   direction keyed by the space's bridge, each element with its own `ct count`: a space's table
 *   is replaced on every publish or change of egress (which its owner asks for), and a count kept
 *   in it would start again from zero each time. The node's table is replaced only at the daemon's
 *   start and by its watchdog.
 */
import { isIPv4 } from 'node:net';
import { OcsError } from '@ocs/protocol';
import { SPACE_ID_SOURCE, isSpaceId } from '../space-id.js';
import type { Egress, NodeNetworkPolicy, PublishedPort, SpaceNetwork } from './types.js';

/** The node's own table. */
export const NODE_TABLE = 'ocs';
/** Every space bridge's name starts so (see podman/names.ts `bridgeName`). */
export const BRIDGE_GLOB = 'ocsbr*';

const BRIDGE = /^ocsbr[0-9a-f]{10}$/;
const TABLE = new RegExp(`^ocs_(${SPACE_ID_SOURCE})$`);

export function spaceTable(spaceId: string): string {
  if (!isSpaceId(spaceId)) throw new OcsError('invalid_request', 'not a space id');
  return `ocs_${spaceId}`;
}

/** The space whose table this is, or undefined for a table that is not a space's. */
export function spaceOfTable(name: string): string | undefined {
  return TABLE.exec(name)?.[1];
}

function bridge(name: string): string {
  if (!BRIDGE.test(name)) throw new OcsError('invalid_request', 'not a space bridge name');
  return name;
}

/** An IPv4 address or network (`a.b.c.d` or `a.b.c.d/n`), checked and returned as given. */
export function checkCidr(value: string, field = 'address'): string {
  const [addr, bits, extra] = value.split('/');
  const ok =
    extra === undefined &&
    addr !== undefined &&
    isIPv4(addr) &&
    (bits === undefined || (/^[0-9]{1,2}$/.test(bits) && Number(bits) <= 32));
  if (!ok) throw new OcsError('invalid_request', `${field} must be an IPv4 address or network`, { field });
  return value;
}

function port(n: number, field: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new OcsError('invalid_request', `${field} must be a port from 1 to 65535`, { field });
  return n;
}

function addrSet(values: string[], field: string): string {
  return `{ ${values.map((v) => checkCidr(v, field)).join(', ')} }`;
}

/**
 * The node's table, replaced whole (with the bridges that have rules) in the same transaction as
 * the spaces' tables on a reconcile, so there is no moment without it.
 */
export function nodeTableScript(
  ruledBridges: string[],
  policy: Pick<NodeNetworkPolicy, 'maxConnections'> = {},
): string {
  const elements = ruledBridges.map((b) => `"${bridge(b)}"`).join(', ');
  const bound = policy.maxConnections;
  const out = bound && connectionBound(bound.outbound, 'maxConnections.outbound');
  const inb = bound && connectionBound(bound.inbound, 'maxConnections.inbound');
  return [
    `table inet ${NODE_TABLE}`,
    `delete table inet ${NODE_TABLE}`,
    `table inet ${NODE_TABLE} {`,
    '  set ruled {',
    '    type ifname;',
    ...(elements ? [`    elements = { ${elements} }`] : []),
    '  }',
    '  chain input {',
    '    type filter hook input priority filter - 10; policy accept;',
    // Workloads never need the host: not the daemon's port, not the broker, not its loopback.
    `    iifname "${BRIDGE_GLOB}" drop`,
    '  }',
    ...(bound ? ['  set conns_out {', '    type ifname; flags dynamic;', '  }'] : []),
    ...(bound ? ['  set conns_in {', '    type ifname; flags dynamic;', '  }'] : []),
    '  chain forward {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    iifname "${BRIDGE_GLOB}" iifname != @ruled drop`,
    `    oifname "${BRIDGE_GLOB}" oifname != @ruled drop`,
    // Each new connection is counted against its space's bound while conntrack holds it (closed
    // TCP connections, in TIME_WAIT, no longer count), and dropped above it. Out: whatever a
    // space's bridge sends, hairpinned or spoofed too (its own table drops those after). In: what
    // a published port forwarded to it; nothing else enters a space.
    ...(bound
      ? [
          `    iifname "${BRIDGE_GLOB}" ct state new add @conns_out { iifname ct count over ${out} } counter drop`,
          `    oifname "${BRIDGE_GLOB}" ct state new ct status dnat add @conns_in { oifname ct count over ${inb} } counter drop`,
        ]
      : []),
    '  }',
    '  chain output {',
    '    type filter hook output priority filter - 10; policy accept;',
    // A local account (any uid but root's) never reaches workloads, published or not.
    `    oifname "${BRIDGE_GLOB}" meta skuid != 0 counter drop`,
    '  }',
    '}',
  ].join('\n');
}

function connectionBound(n: number, field: string): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > 0xffffffff)
    throw new OcsError('invalid_request', `${field} must be a positive integer`, { field });
  return n;
}

function egressRules(egress: Egress, policy: NodeNetworkPolicy): string[] {
  if (egress.mode === 'none') return [];
  const rules: string[] = [];
  if (policy.dns.length > 0) {
    const dns = addrSet(policy.dns, 'dns');
    rules.push(`ip daddr ${dns} udp dport 53 accept`, `ip daddr ${dns} tcp dport 53 accept`);
  }
  if (policy.denied.length > 0) rules.push(`ip daddr ${addrSet(policy.denied, 'denied')} drop`);
  if (egress.mode === 'all') rules.push('accept');
  else if (egress.allow.length > 0) rules.push('ip daddr @allowed accept');
  return rules;
}

function publishRules(p: PublishedPort, i: number): string {
  const field = `published[${i}]`;
  if (p.protocol !== 'tcp' && p.protocol !== 'udp')
    throw new OcsError('invalid_request', `${field}.protocol must be tcp or udp`);
  if (!isIPv4(p.address)) throw new OcsError('invalid_request', `${field}.address must be an IPv4 address`);
  return `fib daddr type local ${p.protocol} dport ${port(p.hostPort, `${field}.hostPort`)} dnat ip to ${p.address}:${port(p.port, `${field}.port`)}`;
}

/** Bytes per second, with a burst of a quarter second (at least 64 KiB), TCP needs one. */
function limitRule(bytesPerSecond: number): string {
  if (!Number.isSafeInteger(bytesPerSecond) || bytesPerSecond < 1024)
    throw new OcsError('invalid_request', 'egressBytesPerSecond must be an integer of at least 1024');
  const burst = Math.max(65536, Math.floor(bytesPerSecond / 4));
  return `limit rate over ${bytesPerSecond} bytes/second burst ${burst} bytes drop`;
}

/**
 * What the space's workload uids send from sockets of the host's own namespace: nothing. QEMU
 * runs there as the space's VM uid (libvirt cannot give it a namespace of its own); a guest's
 * traffic passes through its tap, never a socket, so only a guest that escaped into QEMU sends
 * here, and it must reach neither the metadata address, the node's loopback services, the
 * daemon's port, nor another space.
 */
function uidRules(ranges: readonly { first: number; last: number }[]): string[] {
  if (ranges.length === 0) return [];
  const uid = (n: number, field: string) => {
    if (!Number.isSafeInteger(n) || n < 1 || n > 0xfffffffe)
      throw new OcsError('invalid_request', `${field} must be a uid other than root's`);
    return n;
  };
  const elements = ranges.map((r, i) => {
    const first = uid(r.first, `workloadUids[${i}].first`);
    const last = uid(r.last, `workloadUids[${i}].last`);
    if (last < first) throw new OcsError('invalid_request', `workloadUids[${i}] ends before it starts`);
    return first === last ? String(first) : `${first}-${last}`;
  });
  return [
    '  chain output {',
    '    type filter hook output priority filter - 10; policy accept;',
    `    meta skuid { ${elements.join(', ')} } counter drop`,
    '  }',
  ];
}

/** A space's table, replaced whole; its bridge joins the node's `ruled` set in the same transaction. */
export function spaceTableScript(s: SpaceNetwork, policy: NodeNetworkPolicy): string {
  const table = spaceTable(s.spaceId);
  const br = bridge(s.bridge);
  const subnet = checkCidr(s.subnet, 'subnet');
  const allowed = s.egress.mode === 'list' ? s.egress.allow.map((a) => checkCidr(a, 'egress.allow')) : [];
  return [
    `table inet ${table}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    ...(allowed.length > 0
      ? ['  set allowed {', '    type ipv4_addr; flags interval;', `    elements = { ${allowed.join(', ')} }`, '  }']
      : []),
    '  chain forward {',
    '    type filter hook forward priority filter - 5; policy accept;',
    `    iifname "${br}" jump from_space`,
    `    oifname "${br}" jump to_space`,
    '  }',
    '  chain from_space {',
    // Before any accept: nothing leaves a space from an address that is not its own, not even
    // back into the space through its gateway (a spoofed source is a new tracked connection
    // each, and a reply sent to someone else).
    '    meta nfproto ipv6 counter drop',
    `    ip saddr != ${subnet} counter drop`,
    // Between the space's own workloads (bridged traffic passes here when br_netfilter is loaded).
    `    oifname "${br}" accept`,
    ...(policy.egressBytesPerSecond !== undefined ? [`    ${limitRule(policy.egressBytesPerSecond)}`] : []),
    // Replies: to clients of published ports, and of what the space itself was allowed to open.
    '    ct state established,related accept',
    // Another space, on whatever address it is tried.
    `    oifname "${BRIDGE_GLOB}" drop`,
    ...egressRules(s.egress, policy).map((r) => `    ${r}`),
    '    drop',
    '  }',
    '  chain to_space {',
    '    ct state established,related accept',
    // Only what this table's prerouting forwarded to a published port (other spaces are never DNATed).
    `    ct status dnat ip daddr ${subnet} accept`,
    '    drop',
    '  }',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    iifname "${BRIDGE_GLOB}" return`,
    ...s.published.map((p, i) => `    ${publishRules(p, i)}`),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    ...(s.egress.mode === 'none' ? [] : [`    iifname "${br}" oifname != "${br}" masquerade`]),
    '  }',
    ...uidRules(s.workloadUids ?? []),
    '}',
    `add element inet ${NODE_TABLE} ruled { "${br}" }`,
  ].join('\n');
}

/** Removes a space's table and its bridge from `ruled`; a no-op for either that is already gone. */
export function removeSpaceScript(spaceId: string, bridgeName: string): string {
  const table = spaceTable(spaceId);
  const br = bridge(bridgeName);
  return [
    `table inet ${table}`,
    `delete table inet ${table}`,
    // nft 1.0.6 has no `destroy`: adding first makes the delete of an absent element succeed.
    `add element inet ${NODE_TABLE} ruled { "${br}" }`,
    `delete element inet ${NODE_TABLE} ruled { "${br}" }`,
  ].join('\n');
}
