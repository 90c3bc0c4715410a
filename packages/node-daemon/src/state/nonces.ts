/** The daemon's replay cache of signed requests, in its own database (migrations 3 and 4). */
import { TableNonceStore, type ReplayCacheLimits } from '@ocs/protocol';
import type { Database } from './db.js';

/** Per partition: an owner key or a principal may have this many signatures live at once. */
export const NONCES_PER_PARTITION = 10_000;

export function openNonceStore(db: Database, limits: ReplayCacheLimits = {}): TableNonceStore {
  const insert = db.prepare(
    'INSERT INTO nonces (key, charged_to, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING',
  );
  const expired = db.prepare(
    'SELECT charged_to AS p, count(*) AS n FROM nonces WHERE expires_at < ? GROUP BY charged_to',
  );
  const sweep = db.prepare('DELETE FROM nonces WHERE expires_at < ?');
  const held = db.prepare('SELECT charged_to AS p, count(*) AS n FROM nonces GROUP BY charged_to');
  const rows = (r: unknown[]) => (r as { p: string; n: number }[]).map((x) => [x.p, x.n] as const);
  return new TableNonceStore(
    {
      insert: (key, partition, expiresAt) => insert.run(key, partition, expiresAt).changes,
      // One transaction: what is counted as removed is exactly what is deleted.
      sweep: db.transaction((now: number) => {
        const removed = rows(expired.all(now));
        sweep.run(now);
        return removed;
      }),
      countByPartition: () => rows(held.all()),
    },
    { maxPerPartition: NONCES_PER_PARTITION, ...limits },
  );
}
