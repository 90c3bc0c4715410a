/**
 * A node's drain, for people: what `ocs-node drain` (on the node) and `ocs node drain` (a farmer
 * anywhere) print, one line for the drain and one per space.
 */
import type { DrainStatus } from '@ocs/protocol';

export function describeDrain(s: DrainStatus): string {
  return [
    `drain: ${s.state} (since ${s.startedAt}; orchestrators until ${s.graceUntil}; exports into ${s.exportDir})`,
    ...s.spaces.map(
      (x) =>
        `  ${x.spaceId}  ${x.outcome}${x.to ? ` → ${x.to.url}` : ''}${x.archive ? ` → ${x.archive}` : ''}` +
        `${x.error ? `  (${x.error.code}: ${x.error.message})` : ''}`,
    ),
  ].join('\n');
}

/**
 * Starts, shows or cancels the node's drain, and with `wait` follows it until it ends, calling
 * `show` each time it changed. Answers the last status.
 */
export async function followDrain(
  node: {
    drain(body: { graceSeconds?: number }): Promise<DrainStatus>;
    drainStatus(): Promise<DrainStatus>;
    cancelDrain(): Promise<DrainStatus>;
  },
  o: { action: 'start' | 'status' | 'cancel'; graceSeconds?: number; wait?: boolean; pollMs?: number },
  show: (s: DrainStatus) => void,
): Promise<DrainStatus> {
  let s =
    o.action === 'cancel'
      ? await node.cancelDrain()
      : o.action === 'status'
        ? await node.drainStatus()
        : await node.drain(o.graceSeconds === undefined ? {} : { graceSeconds: o.graceSeconds });
  let last = describeDrain(s);
  show(s);
  while (o.wait && s.state === 'draining') {
    await new Promise((r) => setTimeout(r, o.pollMs ?? 2000));
    s = await node.drainStatus();
    const now = describeDrain(s);
    if (now !== last) show(s);
    last = now;
  }
  return s;
}
