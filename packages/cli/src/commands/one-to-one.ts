/**
 * The CLI's commands that are one catalogue operation each (`volume ls`, `container stop`, …):
 * a row names the command, the operation it calls, the path parameter its argument fills and how
 * its result prints; `attach` makes the commander commands. Commands with logic of their own
 * (uploads with progress, creates with many options, following logs) are functions in the same
 * list, so a group's commands keep their order in its help.
 */
import type { Command } from 'commander';
import type { ParamsOf, ResponseOf, SpaceRoute, SpaceRouteId } from '@ocs/protocol';
import { print } from '../output.js';
import type { Run } from '../main.js';
import { inSpace, spaced } from './space-handle.js';

type S<I extends SpaceRouteId> = Extract<SpaceRoute, { id: I }>;

export interface OneToOne<I extends SpaceRouteId> {
  /** Its usage under its group: `ls`, or `rm <name>` when it takes the one argument. */
  usage: string;
  description: string;
  /** The catalogue operation it calls (`SPACE_OPERATIONS`). */
  op: I;
  /** The path parameter the argument fills. */
  param?: keyof ParamsOf<S<I>> & string;
  /** What it prints: `human` as text, `json` under --json (default: the result itself). */
  human: (result: ResponseOf<S<I>>, arg: string) => string;
  json?: (result: ResponseOf<S<I>>, arg: string) => unknown;
}

/** A row of a group's command list: a one-to-one command, or a hand-written one that adds itself. */
export type Row = OneToOne<SpaceRouteId> | ((group: Command, run: Run) => void);

/** Checks a row against its operation's types, then erases them for the list. */
export const op = <I extends SpaceRouteId>(row: OneToOne<I>): Row => row as unknown as Row;

/** `rm <name>`'s printing: the name removed. */
export const removed = {
  human: (_: unknown, name: string) => `${name}: removed`,
  json: (_: unknown, name: string) => ({ removed: name }),
};

export function attach(group: Command, run: Run, rows: readonly Row[]): void {
  for (const row of rows) {
    if (typeof row === 'function') {
      row(group, run);
      continue;
    }
    spaced(group.command(row.usage))
      .description(row.description)
      .action(
        run(async (ctx, ...args: unknown[]) => {
          const o = args[args.length - 1] as { space?: string };
          const arg = row.param ? (args[0] as string) : '';
          const input = row.param ? { params: { [row.param]: arg } } : {};
          const result = await inSpace(ctx, o.space).call(row.op, input as never);
          print(ctx.out, row.json ? row.json(result, arg) : result, () => row.human(result, arg));
        }),
      );
  }
}
