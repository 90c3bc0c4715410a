/**
 * A space's bridge, for workloads that do not bring one of their own: CNI makes it for the first
 * container, libvirt only attaches a VM's tap to an existing bridge. Made the way CNI's bridge
 * plugin makes it (which then adopts it as it finds it): the gateway address on it, up.
 */
import { existsSync } from 'node:fs';
import { OcsError } from '@ocs/protocol';
import { run, type Runner } from '../exec.js';
import { checkCidr } from './nft-rules.js';

const BRIDGE = /^ocsbr[0-9a-f]{10}$/;

/** Makes the bridge with `gateway` (`a.b.c.d/n`) on it unless it is there; idempotent. */
export async function ensureSpaceBridge(bridge: string, gateway: string, runner: Runner = run): Promise<void> {
  if (!BRIDGE.test(bridge)) throw new OcsError('invalid_request', 'not a space bridge name');
  if (!checkCidr(gateway, 'gateway').includes('/'))
    throw new OcsError('invalid_request', 'gateway must carry its prefix', { field: 'gateway' });
  if (!existsSync(`/sys/class/net/${bridge}`)) {
    // Two starts at once may both try: the loser finds it made.
    await runner('ip', ['link', 'add', bridge, 'type', 'bridge']).catch((err: unknown) => {
      if (!existsSync(`/sys/class/net/${bridge}`)) throw err;
    });
  }
  // `replace`: adding an address the bridge has already fails.
  await runner('ip', ['addr', 'replace', gateway, 'dev', bridge]);
  await runner('ip', ['link', 'set', bridge, 'up']);
}

/** Removes the bridge if it is there (the space is gone; CNI never removes one). */
export async function removeSpaceBridge(bridge: string, runner: Runner = run): Promise<void> {
  if (!BRIDGE.test(bridge)) throw new OcsError('invalid_request', 'not a space bridge name');
  if (existsSync(`/sys/class/net/${bridge}`)) await runner('ip', ['link', 'delete', bridge]);
}
