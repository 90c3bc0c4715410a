/**
 * Containers must not reach the host itself: anything that listens on all addresses, the node
 * daemon's API among them, would otherwise be one hop away from every container. A space's
 * internal podman network holds no address of the host (see network.ts), and behind that, one
 * rule drops every packet that arrives on a space bridge (`ocsbr+`, see {@link bridgeName}) for
 * the host, whatever address the bridge may come to hold (dockerd's internal networks put the
 * host at their gateway address); containers never need the host.
 */
import { run, type Runner } from '../exec.js';
import { BRIDGE_PREFIX } from './names.js';

const RULE = [
  'INPUT',
  '-i',
  `${BRIDGE_PREFIX}+`,
  '-m',
  'comment',
  '--comment',
  'ocs: space bridges never reach the host',
  '-j',
  'DROP',
];

/** Whether the rule is in the host's INPUT chain. */
export async function hostGuarded(runner: Runner = run): Promise<boolean> {
  return runner('iptables', ['-w', '-C', ...RULE]).then(
    () => true,
    () => false,
  );
}

/** Installs the rule once (first in INPUT); idempotent. Throws when iptables cannot. */
export async function guardHostInput(runner: Runner = run): Promise<void> {
  if (await hostGuarded(runner)) return;
  await runner('iptables', ['-w', '-I', ...RULE]);
}

/** Removes the rule (tests that installed it themselves). */
export async function unguardHostInput(runner: Runner = run): Promise<void> {
  while (await hostGuarded(runner)) await runner('iptables', ['-w', '-D', ...RULE]);
}
