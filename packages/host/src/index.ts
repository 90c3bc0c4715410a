/**
 * @ocs/host: drivers for the real host, each behind a small interface. Used by the node daemon
 * (root) only; the space API never imports this package.
 */
export * from './exec.js';
export * from './cgroups/index.js';
export * from './storage/index.js';
