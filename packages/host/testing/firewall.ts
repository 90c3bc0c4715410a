/**
 * Clean-up of the firewall's nftables tables for the tests and benchmarks that made them. The
 * daemon removes a space's table (`NetworkFirewall.remove`) and never the node's; these are not
 * its methods. `prefix` runs nft in another network namespace, as `NetworkFirewallOptions.prefix`.
 */
import { run } from '#src/exec.js';
import { closeDockerForward } from '#src/network/iptables.js';
import { NODE_TABLE, spaceOfTable, spaceTable } from '#src/network/nft-rules.js';

function exec(prefix: string[], cmd: string, args: string[], stdin?: Uint8Array) {
  const [head, ...rest] = [...prefix, cmd, ...args] as [string, ...string[]];
  return run(head, rest, stdin ? { stdin } : {});
}

/** The inet tables of ours now: the spaces' (by id) and whether the node's is there. */
async function ourTables(prefix: string[]): Promise<{ spaces: string[]; node: boolean }> {
  const { stdout } = await exec(prefix, 'nft', ['-j', 'list', 'tables']);
  const parsed = JSON.parse(stdout) as { nftables?: { table?: { family: string; name: string } }[] };
  const inet = (parsed.nftables ?? []).flatMap((e) => (e.table?.family === 'inet' ? [e.table.name] : []));
  return { spaces: inet.flatMap((name) => spaceOfTable(name) ?? []), node: inet.includes(NODE_TABLE) };
}

/** Removes every space's table and the node's (a test's namespace of its own), in one transaction. */
export async function removeAllTables(prefix: string[] = []): Promise<void> {
  const { spaces, node } = await ourTables(prefix);
  const script = [
    ...spaces.map((id) => `delete table inet ${spaceTable(id)}`),
    ...(node ? [`delete table inet ${NODE_TABLE}`] : []),
  ];
  if (script.length > 0) await exec(prefix, 'nft', ['-f', '-'], new TextEncoder().encode(`${script.join('\n')}\n`));
}

/** Removes the node's table if no space has a table any more (a test's node that made it). */
export async function removeNodeTableIfUnused(prefix: string[] = []): Promise<void> {
  const { spaces, node } = await ourTables(prefix);
  if (spaces.length > 0 || !node) return;
  await exec(prefix, 'nft', ['-f', '-'], new TextEncoder().encode(`delete table inet ${NODE_TABLE}\n`));
  await closeDockerForward((c, a) => exec(prefix, c, a));
}
