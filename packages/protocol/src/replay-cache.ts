/**
 * Replay caches for signed requests: a nonce is remembered until its signature expires.
 *
 * The cache is bounded, and it fails closed: when full it refuses new nonces instead of evicting
 * live ones an attacker could then replay. Being bounded, it is also something to fill, so each
 * entry is charged to a partition (the signing key, or whoever may bring new keys) and no
 * partition may hold more than its share: a caller over its share gets `rate_limited`, and the
 * others keep theirs.
 */
import { OcsError } from './errors.js';

/** Remembers nonces until their signature expires; `false` means the nonce was seen before. */
export interface NonceStore {
  /**
   * @param partition whose share the entry counts against; default `keyId`.
   * @throws OcsError `rate_limited` when the partition holds its share, `unavailable` when the
   *   whole cache is full.
   */
  remember(
    keyId: string,
    nonce: string,
    expiresAt: number,
    now: number,
    partition?: string,
  ): boolean | Promise<boolean>;
}

export interface ReplayCacheLimits {
  /** All partitions together (default 1,000,000). */
  maxEntries?: number;
  /** One partition (default a hundredth of `maxEntries`). */
  maxPerPartition?: number;
}

/** The statements a SQL-backed replay cache needs; the caller owns the database. */
export interface NonceTable {
  /** `INSERT … ON CONFLICT DO NOTHING` of (key, partition, expiresAt); returns how many rows were inserted. */
  insert(key: string, partition: string, expiresAt: number): number;
  /** Deletes the entries that expired before `now`; returns how many each partition lost. */
  sweep(now: number): Iterable<readonly [partition: string, removed: number]>;
  /** How many entries each partition holds; read once, on first use. */
  countByPartition(): Iterable<readonly [partition: string, held: number]>;
}

/**
 * A replay cache kept in a table, so a restart does not forget which nonces were used while
 * their signatures are still valid. Counts per partition are kept in memory (loaded once,
 * then maintained by our own inserts and sweeps), so a request costs one insert, not a count.
 */
export class TableNonceStore implements NonceStore {
  private readonly maxEntries: number;
  private readonly maxPerPartition: number;
  private readonly held = new Map<string, number>();
  private total = 0;
  private loaded = false;
  private lastSweep = -Infinity;

  constructor(
    private readonly table: NonceTable,
    limits: ReplayCacheLimits = {},
    /** Seconds between routine sweeps. */
    private readonly sweepEvery = 10,
  ) {
    this.maxEntries = limits.maxEntries ?? 1_000_000;
    this.maxPerPartition = limits.maxPerPartition ?? Math.max(1, Math.floor(this.maxEntries / 100));
  }

  remember(keyId: string, nonce: string, expiresAt: number, now: number, partition = keyId): boolean {
    if (!this.loaded) {
      for (const [p, n] of this.table.countByPartition()) this.add(p, n);
      this.loaded = true;
    }
    const full = this.total >= this.maxEntries || this.heldBy(partition) >= this.maxPerPartition;
    // A full cache or partition is swept at most once a second: a flood at its share must not
    // turn every request into a sweep.
    if (now - this.lastSweep >= this.sweepEvery || (full && now > this.lastSweep)) this.sweep(now);
    if (this.heldBy(partition) >= this.maxPerPartition) {
      throw new OcsError('rate_limited', 'too many signed requests from this caller are still valid; retry shortly');
    }
    if (this.total >= this.maxEntries) throw new OcsError('unavailable', 'the replay cache is full; retry shortly');
    const fresh = this.table.insert(`${keyId}\u0000${nonce}`, partition, expiresAt) === 1;
    if (fresh) this.add(partition, 1);
    return fresh;
  }

  /** Entries held, in all partitions. */
  get size(): number {
    return this.total;
  }

  /** Entries held by one partition. */
  heldBy(partition: string): number {
    return this.held.get(partition) ?? 0;
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [p, n] of this.table.sweep(now)) this.add(p, -n);
  }

  private add(partition: string, n: number): void {
    const v = this.heldBy(partition) + n;
    if (v > 0) this.held.set(partition, v);
    else this.held.delete(partition);
    this.total += n;
  }
}

/** The in-memory table behind `MemoryNonceStore`. */
function memoryTable(): NonceTable {
  const rows = new Map<string, { partition: string; expiresAt: number }>();
  return {
    insert(key, partition, expiresAt) {
      if (rows.has(key)) return 0;
      rows.set(key, { partition, expiresAt });
      return 1;
    },
    sweep(now) {
      const removed = new Map<string, number>();
      for (const [k, r] of rows) {
        if (r.expiresAt >= now) continue;
        rows.delete(k);
        removed.set(r.partition, (removed.get(r.partition) ?? 0) + 1);
      }
      return removed;
    },
    countByPartition: () => [],
  };
}

/** The same replay cache in memory (for processes without a database, and for benchmarks). */
export class MemoryNonceStore extends TableNonceStore {
  constructor(limits: ReplayCacheLimits = {}) {
    super(memoryTable(), limits, 1);
  }
}
