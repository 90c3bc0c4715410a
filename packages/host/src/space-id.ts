/**
 * A space id as the drivers take it: `sp_` and 1 to 40 lowercase letters or digits. It goes
 * into container, network, domain, table and directory names, so no character may mean anything
 * there, and with no `-` or `.` a name like `ocs-<space>-<vm>` splits one way only.
 *
 * Looser than the wire form (protocol's `SpaceId`: exactly 20 characters), on purpose: what the
 * drivers need is a safe name, and their tests and benchmarks name spaces readably
 * (`sp_fwtesta`); the daemon only ever hands them ids of the wire form.
 */
import { OcsError } from '@ocs/protocol';

/** The id's pattern without anchors, for patterns of names that embed it (`ocs_<space>`). */
export const SPACE_ID_SOURCE = 'sp_[a-z0-9]{1,40}';
const SPACE_ID = new RegExp(`^${SPACE_ID_SOURCE}$`);

/** Whether a value, maybe read back from the host (a label, a name), is a space id. */
export function isSpaceId(value: unknown): value is string {
  return typeof value === 'string' && SPACE_ID.test(value);
}

export function checkSpaceId(spaceId: unknown): asserts spaceId is string {
  if (!isSpaceId(spaceId)) {
    throw new OcsError('invalid_request', 'spaceId must look like sp_<lowercase letters and digits>', {
      field: 'spaceId',
    });
  }
}
