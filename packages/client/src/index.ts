export * from './sdk.js';
export * from './transport.js';
export * from './resources.js';
export * from './leases.js';
export * from './archives.js';
export * from './moves.js';
export * from './drains.js';
