/**
 * How our ids become libvirt domain names. Ids have no `-`, so `ocs-<spaceId>-<vmId>` splits
 * one way only, and listing by prefix can never confuse `sp_a` with `sp_ab`.
 */
import { OcsError } from '@ocs/protocol';

const SPACE_ID = /^sp_[a-z0-9]{1,40}$/;
const VM_ID = /^vm_[a-z0-9]{1,40}$/;
const DOMAIN = /^ocs-(sp_[a-z0-9]{1,40})-(vm_[a-z0-9]{1,40})$/;

/** XML namespace of our `<metadata>` element. */
export const METADATA_NS = 'urn:opencluster-spaces:libvirt:1';

export function checkSpaceId(spaceId: unknown): asserts spaceId is string {
  if (typeof spaceId !== 'string' || !SPACE_ID.test(spaceId)) {
    throw new OcsError('invalid_request', 'spaceId must look like sp_<lowercase letters and digits>', {
      field: 'spaceId',
    });
  }
}

export function checkVmId(vmId: unknown): asserts vmId is string {
  if (typeof vmId !== 'string' || !VM_ID.test(vmId)) {
    throw new OcsError('invalid_request', 'vmId must look like vm_<lowercase letters and digits>', { field: 'vmId' });
  }
}

/** Domain name of a VM: `ocs-<spaceId>-<vmId>`. Checks both ids. */
export function domainName(spaceId: string, vmId: string): string {
  checkSpaceId(spaceId);
  checkVmId(vmId);
  return `ocs-${spaceId}-${vmId}`;
}

/** The ids in one of our domain names, or undefined for any other domain. */
export function parseDomainName(name: string): { spaceId: string; vmId: string } | undefined {
  const m = DOMAIN.exec(name);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  return { spaceId: m[1], vmId: m[2] };
}
