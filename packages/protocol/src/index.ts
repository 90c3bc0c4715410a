/**
 * @ocs/protocol: the wire contracts shared by the node daemon, the space API and the client.
 * No I/O lives here: everything that needs the host (clock, randomness sources aside, key
 * stores, caches) is passed in.
 */
export * from './errors.js';
export * from './keys.js';
export * from './wrap.js';
export * from './jwt.js';
export * from './digest.js';
export * from './signatures.js';
export * from './replay-cache.js';
export * from './refusal-budget.js';
export * from './printable.js';
export * from './validate.js';
export * from './routes.js';
export * from './schemas/common.js';
export * from './schemas/node.js';
export * from './schemas/space.js';
export * from './schemas/space-process.js';
export * from './authorize.js';
export * from './single-headers.js';
export * from './token-cache.js';
export * from './key-sets.js';
export * from './operations.js';
export * from './node-operations.js';
export * from './broker.js';
export * from './authority.js';
export * from './client-error.js';
export * from './audit-chain.js';
export * from './space-archive.js';
export * from './delegation.js';
