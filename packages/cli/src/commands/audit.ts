/** `ocs audit`: the node's hash-chained audit log, for farmers and monitors. */
import type { Command } from 'commander';
import { verifyAuditEntries } from '@ocs/protocol';
import { EXIT, print, table } from '../output.js';
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
  audit
    .command('verify')
    .description('fetch the whole log and check its hash chain here: the first broken entry, if any')
    .action(
      run(async (ctx) => {
        const c = ctx.client();
        let from = undefined as { seq: number; hash: string } | undefined;
        let head = '';
        let count = 0;
        for (;;) {
          const page = await c.audit.list({ after: from?.seq ?? 0, limit: 1000 });
          head = page.head;
          if (page.entries.length === 0) break;
          const r = verifyAuditEntries(page.entries, from);
          if (!r.ok) {
            print(
              ctx.out,
              { ok: false, brokenAt: r.brokenAt, reason: r.reason },
              () => `BROKEN at entry ${r.brokenAt}: ${r.reason}`,
            );
            process.exitCode = EXIT.failed;
            return;
          }
          from = r.head;
          count += page.entries.length;
        }
        // The node's own head must be where the chain we checked ends.
        const ok = (from?.hash ?? head) === head;
        print(ctx.out, { ok, entries: count, head }, () =>
          ok
            ? `${count} entries, chain intact, head ${head}`
            : `the node's head ${head} is not the end of the chain read`,
        );
        if (!ok) process.exitCode = EXIT.failed;
      }),
    );
}
