/**
 * @ocs/protocol/node: what the servers and the SDK use on Node in place of the protocol's
 * pure-JS defaults, which stay browser-safe in the main entry. Its own project (Node's types,
 * built into dist/node/) so that nothing here can leak into the main entry.
 */
export { nativeHashes } from './hashes.js';
