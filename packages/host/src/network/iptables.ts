/**
 * The two places where the spaces' firewall meets iptables.
 *
 * dockerd, where it runs beside us (CI machines; some farmers' hosts), sets the FORWARD chain's
 * policy to DROP in its own table. In nftables every base chain on a hook must accept a packet,
 * so docker's drop would cut the spaces' forwarded traffic (published ports, allowed egress)
 * whatever our tables say. Docker keeps a chain for the operator's own rules, `DOCKER-USER`,
 * consulted first: accepting space bridges there only stops docker's drop; every drop of ours
 * still applies, since a drop in any table is final.
 *
 * Before the node's nftables table, the host was shielded from space bridges by one iptables
 * INPUT rule; a node upgraded from then still has it, and it is removed once our table is in.
 */
import type { RunResult } from '../exec.js';

type Exec = (cmd: string, args: string[]) => Promise<RunResult>;

const DOCKER_USER_RULES = [
  ['-i', 'ocsbr+', '-m', 'comment', '--comment', 'ocs: space bridges are ruled in nftables (inet ocs)', '-j', 'ACCEPT'],
  ['-o', 'ocsbr+', '-m', 'comment', '--comment', 'ocs: space bridges are ruled in nftables (inet ocs)', '-j', 'ACCEPT'],
];

const LEGACY_INPUT_RULE = [
  'INPUT',
  '-i',
  'ocsbr+',
  '-m',
  'comment',
  '--comment',
  'ocs: space bridges never reach the host',
  '-j',
  'DROP',
];

const succeeds = (p: Promise<unknown>) =>
  p.then(
    () => true,
    () => false,
  );

/**
 * Lets space bridges through docker's FORWARD drop, if docker's chain is there (no iptables, or
 * no dockerd: nothing to do). Idempotent. Returns whether the chain was found.
 */
export async function openDockerForward(exec: Exec): Promise<boolean> {
  if (!(await succeeds(exec('iptables', ['-w', '-n', '-L', 'DOCKER-USER'])))) return false;
  for (const rule of [...DOCKER_USER_RULES].reverse())
    if (!(await succeeds(exec('iptables', ['-w', '-C', 'DOCKER-USER', ...rule]))))
      await exec('iptables', ['-w', '-I', 'DOCKER-USER', ...rule]);
  return true;
}

/** Removes what {@link openDockerForward} added (tests that added it). */
export async function closeDockerForward(exec: Exec): Promise<void> {
  for (const rule of DOCKER_USER_RULES)
    while (await succeeds(exec('iptables', ['-w', '-C', 'DOCKER-USER', ...rule])))
      await exec('iptables', ['-w', '-D', 'DOCKER-USER', ...rule]);
}

/** Removes the INPUT rule of nodes from before the nftables table. */
export async function removeLegacyInputRule(exec: Exec): Promise<void> {
  while (await succeeds(exec('iptables', ['-w', '-C', ...LEGACY_INPUT_RULE])))
    await exec('iptables', ['-w', '-D', ...LEGACY_INPUT_RULE]);
}
