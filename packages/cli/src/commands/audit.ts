/** `ocs audit`: the node's hash-chained audit log, for farmers and monitors. */
import type { Command } from 'commander';
import { print, table } from '../output.js';
import type { Run } from '../main.js';

export function auditCommands(program: Command, run: Run): void {
  const audit = program.command('audit').description("the node's audit log (role farmer or monitor)");
  audit
    .command('ls')
    .description('entries, oldest first')
    .option('--after <seq>', 'entries after this sequence number', '0')
    .option('--limit <n>', 'at most this many', '100')
    .action(
      run(async (ctx, o: { after: string; limit: string }) => {
        const page = await ctx.client().audit.list({ after: Number(o.after), limit: Number(o.limit) });
        print(ctx.out, page, () =>
          table(
            ['SEQ', 'AT', 'ACTOR', 'ACTION', 'TARGET', 'OUTCOME'],
            page.entries.map((e) => [
              e.seq,
              e.at,
              e.actor,
              e.action,
              e.target,
              e.outcome + (e.code ? ` (${e.code})` : ''),
            ]),
          ),
        );
      }),
    );
}
