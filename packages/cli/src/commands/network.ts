/**
 * A space's network: ports of the node published to its containers and VMs, and where its
 * workloads may reach out (within the farmer's policy; nowhere until asked).
 */
import type { Command } from 'commander';
import type { SpaceNetworkView } from '@ocs/protocol';
import { UsageError, parseCount, parsePublishTarget } from '../units.js';
import { keyValues, print, table } from '../output.js';
import type { Run } from '../main.js';
import { inSpace, spaced } from './space-handle.js';

function showEgress(e: SpaceNetworkView['egress']): string {
  return e.mode === 'list' ? e.allow.join(', ') : e.mode;
}

function showNetwork(n: SpaceNetworkView): string {
  const head = keyValues([
    ['subnet', n.subnet ?? '(none yet: made with the first workload)'],
    ['egress', showEgress(n.egress)],
    ['ports', `${n.published.length} of ${n.ports.reserved} reserved, from ${n.ports.first}-${n.ports.last}`],
  ]);
  if (n.published.length === 0) return head;
  return `${head}\n\n${table(
    ['NODE PORT', 'PROTOCOL', 'TO', 'ADDRESS'],
    n.published.map((p) => [p.hostPort, p.protocol, `${p.target.kind}/${p.target.name}:${p.port}`, p.address]),
  )}`;
}

export function networkCommands(program: Command, run: Run): void {
  const net = program.command('net').description("the space's network: published ports and egress");
  spaced(net.command('show'))
    .description('egress, published ports and where they lead')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const n = await inSpace(ctx, o.space).network.get();
        print(ctx.out, n, () => showNetwork(n));
      }),
    );
  spaced(
    net
      .command('publish <target>')
      .option('--host-port <port>', "a port of the farmer's range (default: the node picks one)"),
  )
    .description('forward a port of the node to [container/|vm/]<name>:<port>[/tcp|/udp]')
    .action(
      run(async (ctx, target: string, o: { hostPort?: string; space?: string }) => {
        const req = parsePublishTarget(target);
        const p = await inSpace(ctx, o.space).network.publish({
          ...req,
          ...(o.hostPort ? { hostPort: parseCount(o.hostPort, '--host-port') } : {}),
        });
        print(
          ctx.out,
          p,
          () =>
            `${p.protocol} ${p.hostPort} -> ${p.target.kind}/${p.target.name}:${p.port} on every address of the node`,
        );
      }),
    );
  spaced(net.command('unpublish <hostPort>'))
    .description('stop forwarding a port of the node')
    .action(
      run(async (ctx, hostPort: string, o: { space?: string }) => {
        const port = parseCount(hostPort, 'hostPort');
        await inSpace(ctx, o.space).network.unpublish(port);
        print(ctx.out, { unpublished: port }, () => `${port}: unpublished`);
      }),
    );
  spaced(net.command('egress <where>'))
    .description("where the space's workloads may reach out: none, all, or a comma-separated list of networks")
    .action(
      run(async (ctx, where: string, o: { space?: string }) => {
        const allow = where.split(',').filter((s) => s !== '');
        if (where !== 'none' && where !== 'all' && allow.length === 0)
          throw new UsageError('egress: none, all, or networks such as 203.0.113.0/24,198.51.100.7');
        const egress: SpaceNetworkView['egress'] =
          where === 'none' || where === 'all' ? { mode: where } : { mode: 'list', allow };
        const n = await inSpace(ctx, o.space).network.setEgress(egress);
        print(ctx.out, n, () => `egress: ${showEgress(n.egress)}`);
      }),
    );
}
