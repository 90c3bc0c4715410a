export * from './types.js';
export { NetworkFirewall, type NetworkFirewallOptions } from './firewall.js';
export { spaceTable, spaceOfTable, checkCidr, NODE_TABLE } from './nft-rules.js';
export { ensureSpaceBridge, removeSpaceBridge } from './bridge.js';
export { nodeNetworks } from './node-networks.js';
export { ipv4ToInt, intToIpv4, ipv4Range } from './ipv4.js';
export { hostPortsInUse, parseSocketTable } from './listening.js';
