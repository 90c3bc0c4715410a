/**
 * What a space's network is allowed to do, as the daemon decides it. The firewall renders these
 * into nftables rules; nothing here is taken from the owner unchecked.
 */

/** Where a space's workloads may open connections beyond their own network. */
export type Egress = { mode: 'none' } | { mode: 'all' } | { mode: 'list'; allow: string[] };

/** A port of the node forwarded to a workload of the space. */
export interface PublishedPort {
  protocol: 'tcp' | 'udp';
  /** On every address of the node, from the farmer's range. */
  hostPort: number;
  /** The workload's address on the space network. */
  address: string;
  port: number;
}

/** One space's network, as its firewall table is made from it. */
export interface SpaceNetwork {
  spaceId: string;
  /** The space's bridge on the host (`ocsbr…`). */
  bridge: string;
  /** The space's IPv4 network, e.g. `10.128.0.0/26`. */
  subnet: string;
  egress: Egress;
  published: PublishedPort[];
  /**
   * The uids the space's workloads run as that could send from the host's own network namespace:
   * its VM uid (QEMU) and its containers' subordinate ids. Nothing they send leaves the node.
   */
  workloadUids?: { first: number; last: number }[];
}

/** The farmer's rules, the same for every space of the node. */
export interface NodeNetworkPolicy {
  /**
   * Destinations no space ever reaches, whatever its egress: the node's other networks, the
   * cloud's metadata address, loopback. Replies to published ports still go out.
   */
  denied: string[];
  /** Resolvers a space with egress may ask (port 53, TCP and UDP), even inside `denied`. */
  dns: string[];
  /** Each space's outgoing traffic is cut above this rate (bytes per second); absent: no cap. */
  egressBytesPerSecond?: number;
  /**
   * How many connections each space may have tracked at once (the node's conntrack table is
   * shared by all): those its workloads open (`outbound`, from its bridge, to anywhere) and those
   * opened to its published ports (`inbound`). A new one above either is dropped. Absent: no bound.
   */
  maxConnections?: { outbound: number; inbound: number };
}

/** What the node's policy forbids by default: everything that is not the internet. */
export const DEFAULT_DENIED = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  // Azure's WireServer and its DNS: a cloud agent on a public address. A node that uses it as
  // its resolver lists it in `dns`, which lets port 53 through and nothing else.
  '168.63.129.16/32',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '224.0.0.0/3',
];
