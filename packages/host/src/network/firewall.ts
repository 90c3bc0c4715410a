/**
 * The node's firewall for space networks: one nftables table per space and the node's own
 * (see nft-rules.ts for the rules and why). Every change is one `nft -f` transaction, so the
 * kernel holds either the old rules or the new ones, never a mix.
 */
import { createHash } from 'node:crypto';
import { OcsError } from '@ocs/protocol';
import { CommandError, run, type Runner } from '../exec.js';
import { bridgeName } from '../podman/names.js';
import { openDockerForward, removeLegacyInputRule } from './iptables.js';
import {
  NODE_TABLE,
  nodeTableScript,
  removeSpaceScript,
  spaceOfTable,
  spaceTable,
  spaceTableScript,
} from './nft-rules.js';
import type { NodeNetworkPolicy, SpaceNetwork } from './types.js';
import { KeyedLock } from '../keyed-lock.js';

export interface NetworkFirewallOptions {
  policy: NodeNetworkPolicy;
  /**
   * The networks the node is on, denied too (`nodeNetworks`), read at every reconcile; the
   * watchdog asks `nodeNetworksChanged` so that an address the node gets later is denied as well.
   */
  nodeNetworks?: () => string[];
  /**
   * The command line that runs nft and sysctl, e.g. `['nsenter', '--net=/run/netns/x']` to act in
   * another network namespace (tests). Default: none, the daemon's own namespace.
   */
  prefix?: string[];
  runner?: Runner;
}

export class NetworkFirewall {
  private readonly runner: Runner;
  private readonly prefix: string[];
  /** One transaction at a time: a reconcile must not interleave with a space's update. */
  private readonly lock = new KeyedLock();
  /** Each table this process wrote, by name, and its fingerprint as the kernel listed it after. */
  private readonly written = new Map<string, string>();
  /** The node's networks the rules in the kernel were made with. */
  private networks: string[] = [];

  constructor(private readonly o: NetworkFirewallOptions) {
    this.runner = o.runner ?? run;
    this.prefix = o.prefix ?? [];
    this.networks = this.readNetworks();
  }

  /** The farmer's policy with the node's networks, as the rules are made now. */
  private get policy(): NodeNetworkPolicy {
    return { ...this.o.policy, denied: [...new Set([...this.o.policy.denied, ...this.networks])] };
  }

  private readNetworks(): string[] {
    return [...new Set(this.o.nodeNetworks?.() ?? [])].sort();
  }

  /** Whether the node's networks are not those the rules were made with (a reconcile takes the new ones). */
  nodeNetworksChanged(): boolean {
    return this.readNetworks().join() !== this.networks.join();
  }

  /**
   * Makes the kernel's rules those of `spaces`: the node's table, a table for each of them, none
   * for any other space that `ours` claims (one gone while the daemon was down). A table `ours`
   * does not claim is another daemon's (tests run several on one host): it is kept, and its
   * bridge stays ruled. Turns forwarding on, which spaces' networks need. Run at start, before
   * any workload is reachable.
   */
  async reconcile(
    spaces: SpaceNetwork[],
    opts: { ours?: (spaceId: string) => boolean } = {},
  ): Promise<{ removed: string[] }> {
    const ours = opts.ours ?? (() => true);
    return this.serial(async () => {
      this.networks = this.readNetworks();
      const live = new Set(spaces.map((s) => s.spaceId));
      const present = (await this.tables()).filter((id) => !live.has(id));
      const removed = present.filter((id) => ours(id));
      const foreign = present.filter((id) => !ours(id));
      const script = [
        nodeTableScript([...spaces.map((s) => s.bridge), ...foreign.map((id) => bridgeName(id))], this.policy),
        ...removed.map((id) => `delete table inet ${spaceTable(id)}`),
        ...spaces.map((s) => spaceTableScript(s, this.policy)),
      ].join('\n');
      await this.nft(script);
      this.written.clear();
      await this.remember([NODE_TABLE, ...spaces.map((s) => spaceTable(s.spaceId))]);
      await removeLegacyInputRule((c, a) => this.exec(c, a));
      await openDockerForward((c, a) => this.exec(c, a));
      await this.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
      return { removed };
    });
  }

  /** Makes or replaces the space's rules. The node's table must be there (a reconcile ran). */
  async apply(space: SpaceNetwork): Promise<void> {
    await this.serial(async () => {
      await this.nft(spaceTableScript(space, this.policy));
      await this.remember([spaceTable(space.spaceId)]);
      // dockerd may have started since the reconcile (see iptables.ts).
      await openDockerForward((c, a) => this.exec(c, a));
    });
  }

  /** Removes the space's rules; nothing to remove is fine. */
  async remove(spaceId: string, bridge: string): Promise<void> {
    await this.serial(async () => {
      await this.nft(removeSpaceScript(spaceId, bridge));
      this.written.delete(spaceTable(spaceId));
    });
  }

  /**
   * The tables this process wrote that are gone from the kernel or no longer what it wrote: a
   * chain flushed, a rule deleted, added or changed, a set's elements changed (`nft -f` of a file
   * that flushes or redefines them). One `nft -j list ruleset`, cheap at the watchdog's period.
   */
  async drifted(): Promise<string[]> {
    return this.serial(async () => {
      const now = await this.fingerprints();
      return [...this.written].filter(([table, print]) => now.get(table) !== print).map(([table]) => table);
    });
  }

  /** The spaces that have a table now. */
  async spaces(): Promise<string[]> {
    return this.serial(() => this.tables());
  }

  /** Whether the node's table is in the kernel. */
  async installed(): Promise<boolean> {
    return this.serial(() => this.hasNodeTable());
  }

  private async tables(): Promise<string[]> {
    return (await this.listTables()).flatMap((t) => {
      const id = t.family === 'inet' ? spaceOfTable(t.name) : undefined;
      return id ? [id] : [];
    });
  }

  private async hasNodeTable(): Promise<boolean> {
    return (await this.listTables()).some((t) => t.family === 'inet' && t.name === NODE_TABLE);
  }

  private async listTables(): Promise<{ family: string; name: string }[]> {
    const { stdout } = await this.exec('nft', ['-j', 'list', 'tables']);
    const parsed = JSON.parse(stdout) as { nftables?: { table?: { family: string; name: string } }[] };
    return (parsed.nftables ?? []).flatMap((e) => (e.table ? [e.table] : []));
  }

  /** Records the fingerprints of tables just written, as the kernel lists them. */
  private async remember(tables: string[]): Promise<void> {
    const now = await this.fingerprints();
    for (const t of tables) {
      const print = now.get(t);
      if (print !== undefined) this.written.set(t, print);
    }
  }

  /** Every `inet` table's fingerprint, by name (see `tableFingerprints`). */
  private async fingerprints(): Promise<Map<string, string>> {
    const { stdout } = await this.exec('nft', ['-j', 'list', 'ruleset']);
    return tableFingerprints(stdout);
  }

  private async nft(script: string): Promise<void> {
    await this.exec('nft', ['-f', '-'], new TextEncoder().encode(`${script}\n`));
  }

  private async exec(cmd: string, args: string[], stdin?: Uint8Array) {
    const [head, ...rest] = [...this.prefix, cmd, ...args] as [string, ...string[]];
    try {
      return await this.runner(head, rest, stdin ? { stdin } : {});
    } catch (err) {
      const e = new OcsError('unavailable', 'the node could not update its network rules');
      e.cause = err instanceof CommandError ? err : new Error(String(err));
      throw e;
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run('ruleset', fn);
  }
}

/**
 * Sets whose elements change while the daemon runs, by others than this process: the bridges with
 * rules (every daemon on the host adds its own; a missing element fails closed), and the bounds'
 * counts per bridge (made and dropped by the kernel).
 */
const LIVE_SETS = new Set(['ruled', 'conns_out', 'conns_in']);

/**
 * A hash of each `inet` table in `nft -j list ruleset`, of what it says and not of what it counts:
 * without handles, counters' values and the elements of `LIVE_SETS`. Chains, rules (in order),
 * their expressions, and the other sets' elements (a space's allowed destinations) all count.
 */
export function tableFingerprints(json: string): Map<string, string> {
  const parsed = JSON.parse(json) as { nftables?: Record<string, Record<string, unknown>>[] };
  const parts = new Map<string, unknown[]>();
  for (const entry of parsed.nftables ?? []) {
    for (const [kind, raw] of Object.entries(entry)) {
      if (kind === 'metainfo' || raw.family !== 'inet') continue;
      const table = String(kind === 'table' ? raw.name : raw.table);
      const { handle: _handle, ...value } = raw;
      if (kind === 'set' && LIVE_SETS.has(String(value.name))) delete value.elem;
      if (kind === 'rule' && Array.isArray(value.expr))
        value.expr = value.expr.map((e: Record<string, unknown>) => ('counter' in e ? { counter: true } : e));
      const list = parts.get(table) ?? [];
      list.push({ [kind]: value });
      parts.set(table, list);
    }
  }
  return new Map([...parts].map(([t, p]) => [t, createHash('sha256').update(JSON.stringify(p)).digest('hex')]));
}
