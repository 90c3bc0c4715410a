/**
 * Helpers for the daemon's tests and e2e: a clock that stands still, an in-process app with its
 * database, two spaces in a ledger. Not for production code (docs/testing.md).
 */
export { ManualClock } from './clock.js';
export * from './test-app.js';
export * from './state.js';
