/**
 * Leases are short on purpose: expiry locks a space and stops its workloads; after the grace
 * period it is destroyed and its key material shredded. The schedule lives in the database, so
 * a daemon that was down simply catches up on its first tick.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import type { SpacesRepo } from '../state/index.js';
import type { SpaceService } from './service.js';

/** How long a node answers `space_moved` for a space that left it. */
const TOMBSTONE_KEEP_MS = 7 * 86400_000;

export class LeaseScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly repo: SpacesRepo,
    private readonly service: SpaceService,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly intervalMs = 1000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** One pass; overlapping ticks share the pass in progress. */
  tick(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    const { expired, pastGrace } = this.repo.due({ now: this.clock.now() });
    for (const row of expired) {
      await this.service
        .expire(row.id)
        .catch((err: unknown) => this.logger.error({ err, spaceId: row.id }, 'lease expiry failed'));
    }
    for (const row of pastGrace) {
      await this.service
        .destroy('node', row.id)
        .catch((err: unknown) => this.logger.error({ err, spaceId: row.id }, 'destroy after grace failed'));
    }
    // Moves: imports nobody sent or committed in time go; tombstones are kept a week.
    await this.service.expireImports();
    this.repo.sweepTombstones(this.clock.now() - TOMBSTONE_KEEP_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
