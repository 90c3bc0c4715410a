/**
 * The farmer's egress policy against what an owner asks for a space. The node allows nowhere,
 * anywhere (but its denied networks, which the firewall drops whatever is allowed), or a list of
 * networks; an owner asks for nowhere, anywhere the node allows, or a list that must lie inside
 * the node's.
 */
import { OcsError, type Egress } from '@ocs/protocol';
import { checkCidr, ipv4ToInt as toInt } from '@ocs/host';

export type NodeEgress = 'none' | 'all' | { allow: string[] };

/** The first and last address of an IPv4 address or network, as integers. */
function span(cidr: string): [number, number] {
  const [addr, bits] = checkCidr(cidr).split('/') as [string, string | undefined];
  const size = 2 ** (32 - Number(bits ?? 32));
  const first = toInt(addr) - (toInt(addr) % size);
  return [first, first + size - 1];
}

/** Whether every address of `inner` is in `outer`. */
export function cidrContains(outer: string, inner: string): boolean {
  const [a, b] = span(outer);
  const [c, d] = span(inner);
  return a <= c && d <= b;
}

/** Refuses (`egress_refused`) what the node's policy does not allow; `invalid_request` for a bad address. */
export function checkEgress(node: NodeEgress, asked: Egress): void {
  if (asked.mode === 'list') asked.allow.forEach((a, i) => checkCidr(a, `allow/${i}`));
  if (asked.mode === 'none' || node === 'all') return;
  if (node === 'none')
    throw new OcsError('egress_refused', "this node's policy gives spaces no egress", { policy: 'none' });
  if (asked.mode === 'all')
    throw new OcsError(
      'egress_refused',
      'this node allows egress to listed networks only: ask for a list within them',
      {
        policy: 'list',
        allow: node.allow,
      },
    );
  const outside = asked.allow.filter((a) => !node.allow.some((n) => cidrContains(n, a)));
  if (outside.length > 0)
    throw new OcsError('egress_refused', "destinations outside this node's egress policy", { outside });
}

/**
 * What the firewall gets for a space: what its owner asked, as far as the node's policy allows it
 * now (a farmer who narrowed the policy narrows every space at the next start).
 */
export function effectiveEgress(node: NodeEgress, asked: Egress): Egress {
  if (asked.mode === 'none' || node === 'all') return asked;
  if (node === 'none') return { mode: 'none' };
  if (asked.mode === 'all') return { mode: 'list', allow: [...node.allow] };
  const allow = asked.allow.filter((a) => node.allow.some((n) => cidrContains(n, a)));
  return allow.length > 0 ? { mode: 'list', allow } : { mode: 'none' };
}
