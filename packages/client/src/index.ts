export * from './sdk.js';
export * from './transport.js';
export * from './resources.js';
