/**
 * The space's network as a CNI configuration list, written by the daemon into the engine's
 * network directory rather than asked of podman, so that exactly these plugins run and nothing
 * else is configured on the host:
 *
 * - `bridge` on the daemon's bridge name, the gateway address on the bridge (the containers'
 *   default route), no masquerade (`ipMasq: false`): every forwarding and NAT decision is the
 *   node's nftables table for the space (network/nft-rules.ts), which no plugin touches. The
 *   plugins podman adds by default (`portmap`, `firewall`, `tuning`) are left out: they would
 *   write iptables rules of their own beside ours.
 * - `host-local` addresses containers from the low part of the subnet; the top 16 addresses
 *   are kept for the space's VMs, which get theirs from the daemon.
 *
 * podman reads the name and labels (`args.podman_labels`) from the file as from one it made.
 */
import { OcsError } from '@ocs/protocol';
import { intToIpv4 as toIp, ipv4ToInt as toInt } from '../network/ipv4.js';
import { LABEL_SPACE, bridgeName, checkSpaceId, networkName } from './names.js';

/** Addresses of a space's subnet as the daemon lays them out. */
export interface SpaceSubnet {
  subnet: string;
  prefix: number;
  /** The host's address on the bridge: the workloads' gateway. */
  gateway: string;
  /** What host-local hands to containers, both ends included. */
  containers: { first: string; last: string };
  /** Kept for VMs, both ends included. */
  vms: { first: string; last: string };
}

/** How many addresses at the top of a space's subnet are kept for VMs. */
export const VM_ADDRESSES = 16;

export function spaceSubnet(subnet: string): SpaceSubnet {
  const m = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\/(\d{1,2})$/.exec(subnet);
  const prefix = Number(m?.[2]);
  if (!m || !m[1] || m[1].split('.').some((o) => Number(o) > 255) || prefix < 16 || prefix > 26)
    throw new OcsError('invalid_request', 'a space subnet is an IPv4 network of /16 to /26');
  const size = 2 ** (32 - prefix);
  const base = toInt(m[1]);
  if (base % size !== 0) throw new OcsError('invalid_request', 'a space subnet must start at its network address');
  const broadcast = base + size - 1;
  return {
    subnet,
    prefix,
    gateway: toIp(base + 1),
    containers: { first: toIp(base + 2), last: toIp(broadcast - VM_ADDRESSES - 1) },
    vms: { first: toIp(broadcast - VM_ADDRESSES), last: toIp(broadcast - 1) },
  };
}

/** The conflist's file name in the engine's network directory. */
export function conflistFile(spaceId: string): string {
  checkSpaceId(spaceId);
  return `${networkName(spaceId)}.conflist`;
}

export function spaceNetworkConflist(spaceId: string, subnet: string): Record<string, unknown> {
  checkSpaceId(spaceId);
  const s = spaceSubnet(subnet);
  return {
    cniVersion: '0.4.0',
    name: networkName(spaceId),
    plugins: [
      {
        type: 'bridge',
        bridge: bridgeName(spaceId),
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          routes: [{ dst: '0.0.0.0/0' }],
          ranges: [
            [{ subnet: s.subnet, gateway: s.gateway, rangeStart: s.containers.first, rangeEnd: s.containers.last }],
          ],
        },
      },
    ],
    args: { podman_labels: { [LABEL_SPACE]: spaceId } },
  };
}
