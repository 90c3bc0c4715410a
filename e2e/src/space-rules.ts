/**
 * The spaces' nftables rules as the tests see and clean them: each test removes the tables of
 * its own spaces (by id), and the node's table only if it was not there before the test and no
 * space has a table any more.
 */
import { DEFAULT_DENIED, NetworkFirewall, bridgeName } from '@ocs/host';
import { removeNodeTableIfUnused } from '@ocs/host/testing';

/** The host's firewall, as a test reads and cleans it (the policy does not matter for that). */
export const hostFirewall = () => new NetworkFirewall({ policy: { denied: [...DEFAULT_DENIED], dns: [] } });

/** The spaces that have a table in the host's ruleset now. */
export async function spaceTables(): Promise<Set<string>> {
  return new Set(await hostFirewall().spaces());
}

/** Removes the rules of `spaceIds`, then the node's table if this test brought it and it is unused. */
export async function removeSpaceRules(spaceIds: Iterable<string>, nodeTableWasThere: boolean): Promise<void> {
  const fw = hostFirewall();
  if (!(await fw.installed())) return;
  for (const id of spaceIds) await fw.remove(id, bridgeName(id));
  if (!nodeTableWasThere) await removeNodeTableIfUnused();
}
