/**
 * A drain: the farmer retires this node, and every space leaves it.
 *
 * From the drain's start the node takes no new space (reservations, restores and imports are
 * `node_draining`) and drops the imports it was waiting for. Then, pass after pass until no
 * space is left:
 *
 * - a space whose owner's delegation names nodes goes to the first of them that takes it: this
 *   node opens the import there itself (signed by its identity key; the target takes drains
 *   from it because its farmer lists this node as a peer, and the space because the owner's
 *   delegation names the target), then moves it as the owner's own move would;
 * - a space whose delegation names orchestrators waits for one of them to move it, until the
 *   drain's grace ends;
 * - any other space (no delegation, an expired one, no named node that takes it, no
 *   orchestrator in time) is exported: locked, written as an archive signed by this node into
 *   the export directory the farmer configured, and torn down. Its tombstone names the file;
 *   its owner restores it anywhere with the same key.
 *
 * Each step is the move's or the export's, with their crash guarantees and audit entries; the
 * drain records each space's outcome and survives a restart (it drains on).
 */
import { OcsError, isOcsError, type DrainStatus, type MoveTarget } from '@ocs/protocol';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import type { AuditLog, DrainRow, DrainSpace, DrainsRepo, SpaceRow, SpacesRepo } from '../state/index.js';
import type { SpaceService } from './service.js';
import type { MoveTransport, SpaceMover } from './mover.js';

export interface DrainerDeps {
  repo: SpacesRepo;
  drains: DrainsRepo;
  service: SpaceService;
  mover: SpaceMover;
  transport: Pick<MoveTransport, 'openPeerImport'>;
  /** This node's TLS certificate fingerprint: a delegation that moved here with its space may name it. */
  tlsFingerprint: string;
  /** Where spaces that go nowhere else are exported. */
  exportDir: string;
  audit: AuditLog;
  clock: Clock;
  logger: Logger;
  /** Pause between passes while spaces wait (default 2 s). */
  passMs?: number;
}

const DEFAULT_GRACE_SECONDS = 600;
const MAX_LEASE_SECONDS = 30 * 86400;
/** Spaces still on the node: the drain ends when none is left. `failed` ones hold nothing to move. */
const LEFT = new Set([
  'creating',
  'active',
  'locking',
  'locked',
  'expired',
  'destroying',
  'importing',
  'prepared',
  'moving',
  'committing',
]);
/** A pause that keeps no process alive (the server keeps the daemon up). */
const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class Drainer {
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly d: DrainerDeps) {}

  /** The drain's record, as the API shows it; undefined when the node was never drained. */
  status(): DrainStatus | undefined {
    const row = this.d.drains.get();
    return row && this.view(row);
  }

  /** Starts a drain (a drain under way is answered as it is). */
  start(actor: string, graceSeconds = DEFAULT_GRACE_SECONDS): DrainStatus {
    const current = this.d.drains.get();
    if (current?.state === 'draining') return this.view(current);
    const now = this.d.clock.now();
    const row: DrainRow = { state: 'draining', startedAt: now, graceUntil: now + graceSeconds * 1000, spaces: [] };
    this.d.drains.put(row);
    this.d.service.draining = true;
    this.d.audit.append({
      actor,
      action: 'node.drain',
      outcome: 'ok',
      detail: { step: 'start', graceSeconds, exportDir: this.d.exportDir },
    });
    this.run();
    return this.view(row);
  }

  /** Stops after the step under way (or reopens a drained node); the node takes new spaces again. */
  cancel(actor: string): DrainStatus {
    const row = this.d.drains.get();
    if (!row) throw new OcsError('not_found', 'this node is not being drained');
    if (row.state !== 'cancelled') {
      row.state = 'cancelled';
      this.d.drains.put(row);
      this.d.service.draining = false;
      this.d.audit.append({ actor, action: 'node.drain', outcome: 'ok', detail: { step: 'cancel' } });
    }
    return this.view(row);
  }

  /** After a restart: a drain under way goes on; a drained node still takes no new space. */
  resume(): void {
    const state = this.d.drains.get()?.state;
    if (state !== 'draining' && state !== 'drained') return;
    this.d.service.draining = true;
    if (state === 'draining') this.run();
  }

  /** No further step starts; the one under way gets a few seconds (a restart resumes the drain). */
  async close(): Promise<void> {
    this.closed = true;
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }

  private run(): void {
    if (this.running) return;
    this.running = this.loop()
      .catch((err: unknown) => this.d.logger.error({ err }, 'the drain stopped on an unexpected error'))
      .finally(() => {
        this.running = undefined;
      });
  }

  private draining(): DrainRow | undefined {
    const row = this.d.drains.get();
    return !this.closed && row?.state === 'draining' ? row : undefined;
  }

  private async loop(): Promise<void> {
    await this.d.service.expireImports({ all: true });
    while (this.draining()) {
      const left = this.d.repo.list({}).filter((r) => LEFT.has(r.state));
      if (left.length === 0) {
        const row = this.draining();
        if (!row) return;
        row.state = 'drained';
        this.settle(row);
        this.d.drains.put(row);
        this.d.audit.append({ actor: 'node', action: 'node.drain', outcome: 'ok', detail: { step: 'drained' } });
        this.d.logger.info('drained: no space is left on this node');
        return;
      }
      for (const space of left) {
        if (!this.draining()) return;
        await this.step(space);
      }
      const row = this.draining();
      if (row) {
        this.settle(row);
        this.d.drains.put(row);
      }
      await pause(this.d.passMs ?? 2000);
    }
  }

  /** Spaces that left while another step ran (a background commit, an orchestrator's move): their outcome. */
  private settle(row: DrainRow): void {
    for (const s of row.spaces) {
      if (s.outcome !== 'moving' && s.outcome !== 'waiting' && s.outcome !== 'pending') continue;
      const t = this.d.repo.tombstone(s.spaceId);
      if (t && !t.archive) {
        s.outcome = 'moved';
        s.to = { url: t.url, fingerprint: t.fingerprint };
        delete s.error;
      }
    }
  }

  private async step(space: SpaceRow): Promise<void> {
    switch (space.state) {
      case 'importing':
      case 'prepared':
        // Not this node's yet: its source keeps it (the commit finds no import here).
        await this.d.service.expireImports({ all: true });
        return;
      case 'active':
      case 'locked':
      case 'expired':
        break;
      case 'creating':
      case 'destroying':
      case 'locking':
      case 'moving':
      case 'committing':
        // Being made, destroyed or moved: the next pass sees how it ended.
        return;
      case 'destroyed':
      case 'failed':
        return;
    }
    const grant = this.d.service.delegationOf(space);
    for (const to of grant?.nodes ?? []) {
      if (!this.draining()) return;
      if (to.fingerprint === this.d.tlsFingerprint) continue; // here already
      if (await this.moveTo(space, to)) return;
    }
    if (grant && grant.orchestrators.length > 0 && this.d.clock.now() < (this.draining()?.graceUntil ?? 0)) {
      this.record(space.id, { outcome: 'waiting' });
      return;
    }
    if (!this.draining()) return;
    this.record(space.id, { outcome: 'exporting' });
    try {
      const t = await this.d.mover.exportToFile('node', space.id, this.d.exportDir);
      this.record(space.id, { outcome: 'exported', archive: t.archive!.name });
    } catch (err) {
      this.d.logger.warn({ err, spaceId: space.id }, 'drain: export failed; retrying at the next pass');
      this.record(space.id, { outcome: 'failed', error: errorOf(err) });
    }
  }

  /** Opens an import on `to` (on the owner's delegation) and moves the space there; false if it did not go. */
  private async moveTo(space: SpaceRow, to: MoveTarget): Promise<boolean> {
    const row = this.d.repo.get(space.id);
    // An expired lease moves nowhere (the target would take a space nobody pays for): exported.
    if (!row || !['active', 'locked'].includes(row.state) || !row.delegation) return false;
    this.record(space.id, { outcome: 'moving', to });
    try {
      const leaseLeft = Math.ceil((row.leaseExpiresAt - this.d.clock.now()) / 1000);
      await this.d.transport.openPeerImport(to, {
        spaceId: row.id,
        resources: {
          cpuMillicores: row.cpuMillicores,
          memoryBytes: row.memoryBytes,
          storageBytes: row.storageBytes,
          ...(row.pids === null ? {} : { pids: row.pids }),
          ...(row.ports > 0 ? { ports: row.ports } : {}),
        },
        leaseSeconds: Math.min(MAX_LEASE_SECONDS, Math.max(60, leaseLeft)),
        ...(row.name === null ? {} : { name: row.name }),
        delegation: row.delegation,
      });
      await this.d.mover.move('node', row.id, to);
      this.record(space.id, { outcome: 'moved', to });
      return true;
    } catch (err) {
      // Committing in the background: the space has left, or will at the next answer.
      if (this.d.repo.get(space.id)?.state === 'committing') return true;
      this.d.logger.warn({ err, spaceId: space.id, to: to.url }, 'drain: the space did not move there');
      this.record(space.id, { outcome: 'failed', to, error: errorOf(err) });
      return false;
    }
  }

  private record(spaceId: string, o: Omit<DrainSpace, 'spaceId'>): void {
    const row = this.d.drains.get();
    if (!row) return;
    const entry: DrainSpace = { spaceId, ...o };
    const i = row.spaces.findIndex((s) => s.spaceId === spaceId);
    if (i === -1) row.spaces.push(entry);
    else row.spaces[i] = entry;
    this.d.drains.put(row);
  }

  private view(row: DrainRow): DrainStatus {
    return {
      state: row.state,
      startedAt: new Date(row.startedAt).toISOString(),
      graceUntil: new Date(row.graceUntil).toISOString(),
      exportDir: this.d.exportDir,
      spaces: row.spaces,
    };
  }
}

function errorOf(err: unknown): { code: string; message: string } {
  if (isOcsError(err)) {
    const reason = (err.details as { reason?: unknown } | undefined)?.reason;
    return { code: err.code, message: typeof reason === 'string' ? `${err.message} (${reason})` : err.message };
  }
  return { code: 'host_failed', message: 'the step failed on this node; its log says why' };
}
