/**
 * Containers must not reach the host itself. An internal Docker network stops routed traffic,
 * but the host answers on the network's gateway address (the bridge's own IP), so anything that
 * listens on all addresses, the node daemon's API among them, would be one hop away from every
 * container. One rule drops every packet that arrives on a space bridge (`ocsbr+`, see
 * {@link bridgeName}) for the host; containers never need the host (Docker's DNS for them lives
 * inside their own network namespace).
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
