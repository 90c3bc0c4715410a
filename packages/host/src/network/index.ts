export * from './types.js';
export { NetworkFirewall, type NetworkFirewallOptions } from './firewall.js';
export { spaceTable, spaceOfTable, checkCidr, NODE_TABLE } from './nft-rules.js';
export { ensureSpaceBridge, removeSpaceBridge } from './bridge.js';
export { nodeNetworks } from './node-networks.js';
