/**
 * On start the host is the source of truth. Records say what should exist; the host says what
 * does. Half-made spaces are undone, half-destroyed ones finished, orphans (host objects no
 * record explains) removed, and stale processes from a previous daemon killed by cgroup.
 */
import type { CgroupDriver, StorageDriver } from '@ocs/host';
import type { Logger } from '../logger.js';
import type { SpacesRepo, Ledger, AuditLog } from '../state/index.js';
import type { SpaceService } from './service.js';
import { spaceCgroupLayout, spaceCgroupLimits, spaceIdOfCgroup } from './layout.js';

export interface ReconcileReport {
  undoneCreates: string[];
  finishedDestroys: string[];
  orphanCgroups: string[];
  orphanStorage: string[];
  markedLocked: string[];
  markedFailed: string[];
  /** Imports whose archive was arriving when the daemon stopped: dropped (their source aborts). */
  droppedImports: string[];
  killedProcesses: number;
}

export async function reconcile(d: {
  repo: SpacesRepo;
  ledger: Ledger;
  audit: AuditLog;
  service: SpaceService;
  cgroups: CgroupDriver;
  storage: StorageDriver;
  cgroupParent: string;
  apiCpuMillicores: number;
  logger: Logger;
}): Promise<ReconcileReport> {
  const report: ReconcileReport = {
    undoneCreates: [],
    finishedDestroys: [],
    orphanCgroups: [],
    orphanStorage: [],
    markedLocked: [],
    markedFailed: [],
    droppedImports: [],
    killedProcesses: 0,
  };
  const rows = d.repo.list({});
  const live = new Set<string>();

  for (const row of rows) {
    switch (row.state) {
      case 'creating':
        // The owner never received a wrapped key for it: nothing to keep.
        await d.service.teardownHost(row.id);
        d.repo.setState(row.id, ['creating'], 'failed');
        d.ledger.release(row.id);
        report.undoneCreates.push(row.id);
        break;
      case 'destroying':
        await d.service.teardownHost(row.id);
        d.repo.setState(row.id, ['destroying'], 'destroyed');
        d.ledger.release(row.id);
        report.finishedDestroys.push(row.id);
        break;
      case 'importing':
        // The archive stream died with the daemon; it cannot be resumed, and was never anyone's.
        await d.service.dropImport(row.id, 'node', new Error('the daemon stopped while the archive arrived'));
        report.droppedImports.push(row.id);
        break;
      // A move's ends are locked spaces on the host; the mover resumes or aborts the move. A
      // lock cut short (`locking`) is finished by the service (`resumeLocks`), as a lock stops
      // a space's workloads.
      case 'prepared':
      case 'moving':
      case 'committing':
      case 'active':
      case 'locking':
      case 'locked':
      case 'expired': {
        live.add(row.id);
        const layout = spaceCgroupLayout(d.cgroupParent, row.id);
        // Space processes of a previous daemon are strays: kill them; the next request starts a fresh one.
        if (await d.cgroups.exists(layout.api)) {
          for (const pid of await d.cgroups.processes(layout.api)) {
            try {
              process.kill(pid, 'SIGKILL');
              report.killedProcesses++;
            } catch {
              /* already gone */
            }
          }
        }
        const limits = spaceCgroupLimits(row, d.apiCpuMillicores);
        await d.cgroups.create(layout.space, limits.space);
        await d.cgroups.create(layout.api, limits.api);
        await d.cgroups.create(layout.workloads, limits.workloads);
        const info = await d.storage.info(row.id).catch(() => undefined);
        if (!info) {
          if (row.state === 'active' || row.state === 'locked' || row.state === 'expired') {
            d.repo.setState(row.id, [row.state], 'failed');
            report.markedFailed.push(row.id);
          } else d.logger.error({ spaceId: row.id, state: row.state }, 'a moving space has no storage');
        } else {
          if (row.state === 'active' && !info.unlocked) {
            // After a reboot (or a crash halfway through a lock) the key is gone: the owner must unlock again.
            d.repo.setState(row.id, ['active'], 'locked');
            report.markedLocked.push(row.id);
          }
          // What the records call locked is locked on the host: a lock cut short by a crash may
          // have evicted the key and left the mount or the loop device. Idempotent.
          if ((row.state !== 'active' && row.state !== 'locking') || !info.unlocked) {
            // A container engine left running holds the storage (its mount namespace): end it first.
            await d.cgroups.destroy(layout.containers);
            await d.cgroups.destroy(layout.engine);
            await d.storage.lock(row.id);
          }
        }
        break;
      }
      case 'failed':
      case 'destroyed':
        break;
    }
  }

  for (const child of await d.cgroups.children(d.cgroupParent).catch(() => [] as string[])) {
    const id = spaceIdOfCgroup(child);
    if (id === undefined || !live.has(id)) {
      await d.cgroups.destroy(`${d.cgroupParent}/${child}`);
      report.orphanCgroups.push(child);
    }
  }
  for (const id of await d.storage.list()) {
    if (!live.has(id)) {
      await d.storage.destroy(id);
      report.orphanStorage.push(id);
    }
  }
  const changed = Object.values(report).some((v) => (Array.isArray(v) ? v.length > 0 : v > 0));
  if (changed)
    d.audit.append({
      actor: 'node',
      action: 'node.reconcile',
      outcome: 'ok',
      detail: report as unknown as Record<string, unknown>,
    });
  d.logger.info(report, 'reconciled host with records');
  return report;
}
