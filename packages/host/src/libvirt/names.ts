/**
 * How our ids become libvirt domain names. Ids have no `-`, so `ocs-<spaceId>-<vmId>` splits
 * one way only, and listing by prefix can never confuse `sp_a` with `sp_ab`.
 */
import { OcsError } from '@ocs/protocol';
import { SPACE_ID_SOURCE, checkSpaceId } from '../space-id.js';

export { checkSpaceId } from '../space-id.js';

const VM_ID = /^vm_[a-z0-9]{1,40}$/;
const DOMAIN = new RegExp(`^ocs-(${SPACE_ID_SOURCE})-(vm_[a-z0-9]{1,40})$`);

/** XML namespace of our `<metadata>` element. */
export const METADATA_NS = 'urn:opencluster-spaces:libvirt:1';

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
