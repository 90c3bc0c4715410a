/**
 * Helpers for tests of the real host, shared with e2e and bench: a busybox image made without a
 * registry, and a tiny guest (host kernel + busybox initramfs) that boots to a marker.
 * Not for production code.
 */
export { buildBusyboxImage, importBusyboxImage, busyboxRootfsTar, BUSYBOX_PATH } from './busybox-image.js';
export {
  buildTestGuest,
  testGuestUnavailable,
  findHostKernel,
  type TestGuest,
  type GuestBehaviour,
} from './test-guest.js';
export { requireHost, hostRequired, kernelSkip } from './require-host.js';
export { NetnsLab, type Target, type Answer } from './netns-lab.js';
export { rawContains } from './storage-conformance.js';
export { removeAllTables, removeNodeTableIfUnused } from './firewall.js';
export { engineServiceRunning } from './engines.js';
