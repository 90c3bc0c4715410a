/**
 * `ocs lease`: for orchestrators. `place` picks a node with room among those named and reserves
 * there; `keep` renews every recorded lease before it runs out, until stopped; `release`
 * destroys. Leases and their wrapped keys go to a record file the caller names.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { placeLease, renewLease, renewalDue, type Lease } from '@ocs/client';
import { OcsError } from '@ocs/protocol';
import { LeaseRecord } from '../lease-record.js';
import { UsageError, formatDuration, parseCpu, parseDuration, parseSize } from '../units.js';
import { print, table } from '../output.js';
import type { Context } from '../context.js';
import type { Run } from '../main.js';

const record = (ctx: Context, file?: string) => new LeaseRecord(file ?? join(ctx.store.dir, 'leases.json'));
const left = (l: Lease) => formatDuration((Date.parse(l.expiresAt) - Date.now()) / 1000);
const log = (ctx: Context, line: string) => {
  if (!ctx.out.json) process.stderr.write(`${new Date().toISOString()} ${line}\n`);
};

export function leaseCommands(program: Command, run: Run): void {
  const lease = program.command('lease').description('orchestrators: place spaces across nodes and keep their leases');
  const withRecord = (c: Command) =>
    c.option('--record <file>', 'the lease record (0600; default: leases.json in the config directory)');

  withRecord(
    lease
      .command('place')
      .description('reserve on the first of --nodes that has room (an idempotency key makes a retry safe)')
      .requiredOption('--nodes <names>', 'nodes in order of preference, comma-separated (ocs node add each)')
      .requiredOption('--cpu <n>', 'CPUs: 2, 0.5 or 500m')
      .requiredOption('--memory <size>', 'e.g. 4GiB')
      .requiredOption('--storage <size>', 'e.g. 20GiB')
      .option('--lease <duration>', 'lease length, renewed by ocs lease keep', '1h')
      .option('--name <name>', 'a name for the space'),
  ).action(
    run(
      async (
        ctx,
        o: {
          nodes: string;
          cpu: string;
          memory: string;
          storage: string;
          lease: string;
          name?: string;
          record?: string;
        },
      ) => {
        const names = o.nodes
          .split(',')
          .map((n) => n.trim())
          .filter(Boolean);
        if (names.length === 0) throw new UsageError('--nodes names no node');
        const targets = names.map((name) => ({ name, client: ctx.client({ owner: true, node: name }) }));
        const l = await placeLease(
          targets,
          {
            resources: {
              cpuMillicores: parseCpu(o.cpu),
              memoryBytes: parseSize(o.memory, 'memory'),
              storageBytes: parseSize(o.storage, 'storage'),
            },
            leaseSeconds: parseDuration(o.lease, 'lease'),
            ...(o.name ? { name: o.name } : {}),
          },
          { onSkip: (s) => log(ctx, `skipped ${s.node}: ${s.reason}`) },
        );
        await record(ctx, o.record).update((ls) => void ls.push(l));
        const { wrappedKey: _w, ...shown } = l;
        print(ctx.out, shown, () => `${l.spaceId} on ${l.node}, lease until ${l.expiresAt}`);
      },
    ),
  );

  withRecord(lease.command('ls').description('the recorded leases')).action(
    run(async (ctx, o: { record?: string }) => {
      const ls = record(ctx, o.record).read();
      print(ctx.out, { leases: ls.map(({ wrappedKey: _w, ...l }) => l) }, () =>
        table(
          ['SPACE', 'NODE', 'EXPIRES', 'LEFT'],
          ls.map((l) => [l.spaceId, l.node, l.expiresAt, left(l)]),
          'no leases',
        ),
      );
    }),
  );

  withRecord(
    lease
      .command('keep')
      .description('renew every recorded lease once half of it is left, until stopped (SIGTERM or Ctrl-C)')
      .option('--interval <duration>', 'how often to look', '5s'),
  ).action(
    run(async (ctx, o: { record?: string; interval: string }) => {
      const rec = record(ctx, o.record);
      const every = parseDuration(o.interval, 'interval') * 1000;
      let stopping = false;
      let wake: () => void = () => undefined;
      const stop = () => {
        stopping = true;
        wake();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      log(ctx, `keeping the leases in ${rec.path}`);
      while (!stopping) {
        for (const l of rec.read()) {
          if (stopping || !renewalDue(l)) continue;
          try {
            const renewed = await renewLease(ctx.client({ owner: true, node: l.node }), l);
            await rec.update((ls) => {
              const i = ls.findIndex((x) => x.spaceId === l.spaceId && x.node === l.node);
              if (i >= 0) ls[i] = { ...ls[i]!, expiresAt: renewed.expiresAt };
            });
            log(ctx, `renewed ${l.spaceId} on ${l.node} until ${renewed.expiresAt}`);
          } catch (err) {
            // One node's failure never stops the others' renewals; the next round tries again.
            log(ctx, `could not renew ${l.spaceId} on ${l.node}: ${err instanceof OcsError ? err.code : String(err)}`);
          }
        }
        await new Promise<void>((r) => {
          const timer = setTimeout(r, every);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
      }
      log(ctx, 'stopped');
    }),
  );

  withRecord(
    lease
      .command('release [space]')
      .description('destroy a leased space (or --all of them) and drop it from the record')
      .option('--all', 'every recorded lease'),
  ).action(
    run(async (ctx, space: string | undefined, o: { all?: boolean; record?: string }) => {
      const rec = record(ctx, o.record);
      const chosen = rec.read().filter((l) => o.all || l.spaceId === space);
      if (chosen.length === 0)
        throw new UsageError(space ? `no recorded lease of ${space}` : 'name a space or pass --all');
      for (const l of chosen) {
        try {
          await ctx.client({ owner: true, node: l.node }).spaces.destroy(l.spaceId);
        } catch (err) {
          if (!(err instanceof OcsError && err.code === 'not_found')) throw err;
        }
        await rec.update((ls) => {
          const i = ls.findIndex((x) => x.spaceId === l.spaceId && x.node === l.node);
          if (i >= 0) ls.splice(i, 1);
        });
        log(ctx, `released ${l.spaceId} on ${l.node}`);
      }
      print(ctx.out, { released: chosen.map((l) => l.spaceId) }, () =>
        chosen.map((l) => `${l.spaceId}: released`).join('\n'),
      );
    }),
  );
}
