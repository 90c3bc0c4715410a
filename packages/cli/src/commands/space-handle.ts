/** What every in-space command shares: its `--space` option and the signed handle on that space. */
import type { Command } from 'commander';
import type { Context } from '../context.js';

export function inSpace(ctx: Context, flag?: string) {
  const { spaceId } = ctx.space(flag);
  return ctx.client({ owner: true }).space(spaceId);
}

/** Adds `--space` to a command (any in-space command takes it). */
export const spaced = (c: Command) => c.option('--space <id>', 'the space (default: the current one)');
