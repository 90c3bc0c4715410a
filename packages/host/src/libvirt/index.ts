/**
 * VMs through libvirt (QEMU) for the node daemon's privileged broker. Only connection.ts
 * touches the libvirt binding; everything else works from typed input and libvirt's XML.
 */
export type { Accelerator, ConsoleTail, VmBoot, VmDriver, VmDriverOptions, VmSpec, VmState } from './types.js';
export { createVmDriver, LibvirtVmDriver, DEFAULT_STAGING_DIR, type DriverSettings } from './driver.js';
export { openLibvirt, NoSuchDomain, type LibvirtConnection, type RawState } from './connection.js';
export { buildDomainXml, xmlEscape, type DomainPlan } from './domain-xml.js';
export { validateSpec, VM_BOUNDS } from './validate.js';
export { checkPartition, ensurePartition, partitionProblem } from './partition.js';
export { domainName, parseDomainName, METADATA_NS } from './names.js';
export { chooseAccelerator, bootToMarker, type AcceleratorSetting, type AcceleratorChoice } from './accel.js';
export { grantKvm, revokeKvm, kvmGrants } from './kvm-access.js';
export { MAX_TAIL_BYTES } from './console.js';
