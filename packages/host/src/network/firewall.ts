/**
 * The node's firewall for space networks: one nftables table per space and the node's own
 * (see nft-rules.ts for the rules and why). Every change is one `nft -f` transaction, so the
 * kernel holds either the old rules or the new ones, never a mix.
 */
import { OcsError } from '@ocs/protocol';
import { CommandError, run, type Runner } from '../exec.js';
import { bridgeName } from '../podman/names.js';
import { closeDockerForward, openDockerForward, removeLegacyInputRule } from './iptables.js';
import {
  NODE_TABLE,
  nodeTableScript,
  removeSpaceScript,
  spaceOfTable,
  spaceTable,
  spaceTableScript,
} from './nft-rules.js';
import type { NodeNetworkPolicy, SpaceNetwork } from './types.js';

export interface NetworkFirewallOptions {
  policy: NodeNetworkPolicy;
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
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: NetworkFirewallOptions) {
    this.runner = o.runner ?? run;
    this.prefix = o.prefix ?? [];
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
      const live = new Set(spaces.map((s) => s.spaceId));
      const present = (await this.tables()).filter((id) => !live.has(id));
      const removed = present.filter((id) => ours(id));
      const foreign = present.filter((id) => !ours(id));
      const script = [
        nodeTableScript([...spaces.map((s) => s.bridge), ...foreign.map((id) => bridgeName(id))]),
        ...removed.map((id) => `delete table inet ${spaceTable(id)}`),
        ...spaces.map((s) => spaceTableScript(s, this.o.policy)),
      ].join('\n');
      await this.nft(script);
      await removeLegacyInputRule((c, a) => this.exec(c, a));
      await openDockerForward((c, a) => this.exec(c, a));
      await this.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
      return { removed };
    });
  }

  /** Makes or replaces the space's rules. The node's table must be there (a reconcile ran). */
  async apply(space: SpaceNetwork): Promise<void> {
    await this.serial(async () => {
      await this.nft(spaceTableScript(space, this.o.policy));
      // dockerd may have started since the reconcile (see iptables.ts).
      await openDockerForward((c, a) => this.exec(c, a));
    });
  }

  /** Removes the space's rules; nothing to remove is fine. */
  async remove(spaceId: string, bridge: string): Promise<void> {
    await this.serial(() => this.nft(removeSpaceScript(spaceId, bridge)));
  }

  /** The spaces that have a table now. */
  async spaces(): Promise<string[]> {
    return this.serial(() => this.tables());
  }

  /** Removes the node's table too (tests that made it, in a namespace of their own). */
  async removeAll(): Promise<void> {
    await this.serial(async () => {
      const ids = await this.tables();
      const hasNode = await this.hasNodeTable();
      const script = [
        ...ids.map((id) => `delete table inet ${spaceTable(id)}`),
        ...(hasNode ? [`delete table inet ${NODE_TABLE}`] : []),
      ];
      if (script.length > 0) await this.nft(script.join('\n'));
    });
  }

  /** Removes the node's table if no space has a table any more (a test's node that made it). */
  async removeNodeTableIfUnused(): Promise<void> {
    await this.serial(async () => {
      if ((await this.tables()).length > 0 || !(await this.hasNodeTable())) return;
      await this.nft(`delete table inet ${NODE_TABLE}`);
      await closeDockerForward((c, a) => this.exec(c, a));
    });
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
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}
