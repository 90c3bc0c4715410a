/**
 * A space's workloads as a whole, for the space's own life: stop them all before its storage
 * locks (lock, expiry), open and start again what ran once it is unlocked, remove them all when
 * it goes, and reconcile the host with the records after a crash. Each step is a loop over the
 * workload kinds (kind.ts); what a step means for a container or a VM is in that kind's module.
 * This is what the space service (`spaces/service.ts`, through its `Workloads` interface) and the
 * daemon's start-up call.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import type { RemapFrom, SpaceRow } from '../state/index.js';
import { isLive } from '../state/space-states.js';
import { spaceDataLayout } from '../spaces/layout.js';
import type { WorkloadContext } from './context.js';
import { portsHeldByHost } from './network.js';
import type { SpacesView, WorkloadKind, WorkloadKindName } from './kind.js';

const DEFAULT_STOP_GRACE_SECONDS = 3;

/**
 * What ran when a space was locked, by kind; unlock starts it again. Lives inside the space.
 * Files written before kinds were keyed by name hold `containers` and `vms`.
 */
type RunningAtLock = Partial<Record<WorkloadKindName | `${WorkloadKindName}s`, string[]>>;

/** What reconciliation found and did, by kind (logged when not empty). */
export interface ReconcileReport {
  undone: string[];
  orphans: Partial<Record<WorkloadKindName, string[]>>;
  orphanSpaces: string[];
}

export class WorkloadLifecycle {
  /**
   * `kinds` in the order a space's life wants them: what opens with the storage (volumes) before
   * what mounts it (containers, VMs).
   */
  constructor(
    private readonly c: WorkloadContext,
    private readonly kinds: readonly WorkloadKind[],
  ) {}

  /** After the space's storage is unlocked, before it turns active: opens what opens with it (volume keys). */
  async open(spaceId: string, mountpoint: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    for (const kind of this.kinds) await kind.open?.(s, mountpoint);
  }

  /**
   * Stops everything of the space at once and records nothing of what ran: for a first unlock
   * of a restored space that failed halfway (its engine may have been started to adopt its
   * store), so its storage can lock again with what ran at lock still recorded.
   */
  async kill(spaceId: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    for (const kind of this.kinds) await kind.stopForLock(s, undefined, 0);
  }

  /**
   * What the space published where it came from, published again here: the same ports of its
   * workloads (under their new ids, at their new addresses), on host ports of this node's range.
   * One already published (a remap run again after a crash) is not published twice.
   */
  private async republish(s: SpaceRow, from: RemapFrom): Promise<void> {
    const wanted = from.published ?? [];
    if (wanted.length === 0) return;
    const range = this.c.range();
    const inUse = await (this.c.d.portsInUse ?? portsHeldByHost)();
    const held = this.c.d.ports.list(s.id);
    for (const p of wanted) {
      const workloadId = from.workloadIds[p.workloadId];
      if (workloadId === undefined) continue;
      if (held.some((h) => h.workloadId === workloadId && h.protocol === p.protocol && h.port === p.port)) continue;
      this.c.d.ports.publish({ id: s.id, ports: s.ports }, range, {
        workloadId,
        protocol: p.protocol,
        port: p.port,
        inUse,
      });
    }
    await this.c.network().update(s.id);
  }

  /** A restored space's first unlock, first: what the kinds keep in the storage by id, renamed. */
  async rename(spaceId: string, mountpoint: string, from: RemapFrom): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    for (const kind of this.kinds) await kind.rename?.(s, mountpoint, from);
  }

  /**
   * A restored space's first unlock: each kind makes what it keeps in the space its own, and
   * what ran at lock is named by the workloads' new ids.
   */
  async remap(spaceId: string, mountpoint: string, from: RemapFrom): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    for (const kind of this.kinds) await kind.remap?.(s, mountpoint, from);
    await this.republish(s, from);
    const file = spaceDataLayout(mountpoint).runningAtLock;
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    try {
      const running = JSON.parse(text) as RunningAtLock;
      const renamed: RunningAtLock = {};
      for (const [k, ids] of Object.entries(running) as [keyof RunningAtLock, string[]][])
        renamed[k] = ids.map((id) => from.workloadIds[id] ?? id);
      await writeFile(file, JSON.stringify(renamed), { mode: 0o600 });
    } catch {
      await rm(file, { force: true });
    }
  }

  /**
   * Stops every kind's workloads before the space's storage locks, in parallel, each given
   * `stopGraceSeconds` (default 3 s) to shut down before it is killed: the lock waits at most
   * that long plus the kill. What was running is written into the space (still unlocked here),
   * so unlock can start it again.
   */
  async stopAll(spaceId: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    const grace = this.c.d.stopGraceSeconds ?? DEFAULT_STOP_GRACE_SECONDS;
    const storage = await this.c.d.storage.info(spaceId).catch(() => undefined);
    const running: RunningAtLock = {};
    await Promise.all(
      this.kinds.map(async (kind) => {
        running[kind.kind] = await kind.stopForLock(s, storage, grace);
      }),
    );
    if (storage?.unlocked) {
      const file = spaceDataLayout(storage.mountpoint).runningAtLock;
      await writeFile(file, JSON.stringify(running), { mode: 0o600 }).catch((err: unknown) =>
        this.c.d.logger.warn({ err, spaceId }, 'could not record what ran at lock'),
      );
    }
  }

  /**
   * After unlock: starts again, kind by kind, what ran when the space was locked and still has
   * a record. A workload that cannot start is logged and left stopped; the owner sees its state.
   */
  async restore(spaceId: string, mountpoint: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    const running = await this.takeRunningAtLock(spaceId, mountpoint);
    if (!running) return;
    const known = new Set(this.c.d.workloads.list(spaceId).map((w) => w.id));
    for (const kind of this.kinds) {
      const ids = running[kind.kind] ?? running[`${kind.kind}s`] ?? [];
      await kind.restore(
        s,
        mountpoint,
        ids.filter((id) => known.has(id)),
      );
    }
  }

  private addGone(report: ReconcileReport, spaces: readonly string[]): void {
    report.orphanSpaces.push(...spaces.filter((id) => !report.orphanSpaces.includes(id)));
  }

  /** Reads and removes the record of what ran at lock; undefined when there is none (or it is unreadable). */
  private async takeRunningAtLock(spaceId: string, mountpoint: string): Promise<RunningAtLock | undefined> {
    const file = spaceDataLayout(mountpoint).runningAtLock;
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    await rm(file, { force: true });
    try {
      return JSON.parse(text) as RunningAtLock;
    } catch {
      this.c.d.logger.warn({ spaceId }, 'what ran at lock is unreadable; nothing is restarted');
      return undefined;
    }
  }

  /** Removes every kind's host objects of the space, its network and rules, and forgets its records. */
  async removeAll(spaceId: string): Promise<void> {
    this.c.forget(spaceId);
    for (const kind of this.kinds) await kind.removeAll(spaceId);
    await this.c.d.networks?.remove(spaceId);
    this.c.d.workloads.removeSpace(spaceId);
  }

  /**
   * On start, after the spaces are reconciled: what still runs for a space that is not active is
   * stopped, workloads half made (or half removed) when the daemon died are undone, then each
   * kind removes what no record explains. Records are the
   * truth for what a space holds; the host for what exists.
   */
  async reconcile(): Promise<ReconcileReport> {
    const report: ReconcileReport = { undone: [], orphans: {}, orphanSpaces: [] };
    const records = this.c.d.spaces.list({});
    // Live: no space is `creating` any more here (the spaces' reconciliation ran first).
    const live = new Set(records.filter((r) => isLive(r.state)).map((r) => r.id));
    const active = new Map<string, SpaceRow>(records.filter((r) => r.state === 'active').map((r) => [r.id, r]));
    const byKind = new Map(this.kinds.map((k) => [k.kind, k]));
    // Ours are recorded before any host object is made, so none is missed.
    const ours = new Set(records.map((r) => r.id));
    for (const kind of this.kinds) this.addGone(report, (await kind.stopInactive?.({ ours, live, active })) ?? []);
    for (const w of this.c.d.workloads.listAll()) {
      if (!live.has(w.spaceId)) {
        this.c.d.workloads.remove(w.id);
        continue;
      }
      if (w.state !== 'creating' && w.removingSince === null) continue;
      const kind = byKind.get(w.kind);
      // One space's host failing here must not keep the node from starting: its record stays,
      // and counts, until a later start undoes it.
      const done = await kind?.undo(w, active.get(w.spaceId)).catch((err: unknown) => {
        this.c.d.logger.error({ err, spaceId: w.spaceId, id: w.id }, 'could not undo a half-made workload');
        return false;
      });
      if (!done) continue;
      this.c.d.workloads.remove(w.id);
      report.undone.push(w.id);
    }
    const view: SpacesView = { ours, live, active, known: new Set(this.c.d.workloads.listAll().map((w) => w.id)) };
    for (const kind of this.kinds) {
      const found = await kind.removeOrphans(view);
      if (found.workloads.length > 0) report.orphans[kind.kind] = found.workloads;
      this.addGone(report, found.spaces);
    }
    if (report.undone.length > 0 || report.orphanSpaces.length > 0 || Object.keys(report.orphans).length > 0)
      this.c.d.logger.warn(report, 'reconciled workloads');
    return report;
  }
}
