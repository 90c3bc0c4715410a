/**
 * The node's drain (migration 11): at most one record, the last drain asked, with its progress
 * space by space. It outlives a restart: a node restarted mid-drain drains on.
 */
import type { DrainStatus } from '@ocs/protocol';
import type { Database } from './db.js';

export type DrainState = DrainStatus['state'];
export type DrainSpace = DrainStatus['spaces'][number];

export interface DrainRow {
  state: DrainState;
  startedAt: number;
  graceUntil: number;
  spaces: DrainSpace[];
}

export class DrainsRepo {
  constructor(private readonly db: Database) {}

  get(): DrainRow | undefined {
    const r = this.db.prepare('SELECT state, started_at, grace_until, spaces FROM drains WHERE id = 1').get() as
      { state: DrainState; started_at: number; grace_until: number; spaces: string } | undefined;
    return (
      r && {
        state: r.state,
        startedAt: r.started_at,
        graceUntil: r.grace_until,
        spaces: JSON.parse(r.spaces) as DrainSpace[],
      }
    );
  }

  /** Writes the drain record whole (a new drain replaces the last one's). */
  put(d: DrainRow): void {
    this.db
      .prepare(
        `INSERT INTO drains (id, state, started_at, grace_until, spaces) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at,
           grace_until = excluded.grace_until, spaces = excluded.spaces`,
      )
      .run(d.state, d.startedAt, d.graceUntil, JSON.stringify(d.spaces));
  }
}
