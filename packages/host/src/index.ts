/**
 * @ocs/host: drivers for the real host, each behind a small interface. Used by the node daemon
 * (root) only; the space API never imports this package.
 */
export * from './exec.js';
export * from './cgroups/index.js';
export * from './storage/index.js';
export { overlappingShifts, remapOwnership, shiftedId, type IdShift, type RemapResult } from './remap-ownership.js';
export { rootLinks } from './sandbox-root.js';
export * from './podman/index.js';
export * from './libvirt/index.js';
export * from './engine/index.js';
export * from './network/index.js';
export * from './procfs.js';
export * from './revert.js';
// Opening files in a space's storage as root without being redirected by a link the space planted.
export { openExactFile } from './libvirt/safe-open.js';
// Both drivers name their spec check validateSpec; say which is which.
export { validateSpec as validateContainerSpec } from './podman/index.js';
export { validateSpec as validateVmSpec } from './libvirt/index.js';
export { validateSpec } from './podman/index.js';
