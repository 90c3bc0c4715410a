/**
 * A space's workloads as a whole, for the space's own life: stop them all before its storage
 * locks (lock, expiry), start again what ran once it is unlocked, remove them all when it goes,
 * and reconcile the host with the records after a crash. The broker's per-kind operations are in
 * `broker/`; this is what the space service and the daemon's start-up call.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrokerContext } from '../broker/context.js';
import type { VolumeOps } from '../broker/volumes.js';
import { shredVolumeKey } from '../broker/volume-keys.js';
import { spaceDataLayout } from './layout.js';

const DEFAULT_STOP_GRACE_SECONDS = 3;

/** What ran when a space was locked; unlock starts it again. Lives inside the space. */
interface RunningAtLock {
  containers: string[];
  vms: string[];
}

export class WorkloadLifecycle {
  constructor(
    private readonly c: BrokerContext,
    private readonly volumes: VolumeOps,
  ) {}

  /** After the space's storage is unlocked: opens its volumes too (their keys live inside it). */
  unlockVolumes(spaceId: string, mountpoint: string): Promise<void> {
    return this.volumes.unlockVolumes(spaceId, mountpoint);
  }

  /**
   * Stops the space's containers (with its engine) and VMs before its storage locks, in
   * parallel, each given `stopGraceSeconds` (default 3 s) to shut down before it is killed: the
   * lock waits at most that long plus the kill. What was running is written into the space
   * (still unlocked here), so unlock can start it again.
   */
  async stopAll(spaceId: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    const grace = this.c.d.stopGraceSeconds ?? DEFAULT_STOP_GRACE_SECONDS;
    const info = await this.c.d.storage.info(spaceId).catch(() => undefined);
    const running: RunningAtLock = { containers: [], vms: [] };
    const vmStops = this.c.d.vms
      ? this.c.d.workloads.list(spaceId, 'vm').map(async (w) => {
          const vms = this.c.d.vms!;
          const state = await vms.state(spaceId, w.id).catch(() => 'gone');
          if (state === 'running') running.vms.push(w.id);
          await vms.stop(spaceId, w.id, { graceSeconds: grace }).catch((err: unknown) => this.c.ignoreGone(err));
        })
      : [];
    const containerStop = (async () => {
      if (!this.c.d.containers || !info?.unlocked) {
        await this.c.d.containers?.remove(this.c.engineGroups(spaceId));
        return;
      }
      running.containers = await this.c.d.containers.stop(this.c.engineSpace(s, info.mountpoint));
    })();
    await Promise.all([containerStop, ...vmStops]);
    if (info?.unlocked) {
      const file = spaceDataLayout(info.mountpoint).runningAtLock;
      await writeFile(file, JSON.stringify(running), { mode: 0o600 }).catch((err: unknown) =>
        this.c.d.logger.warn({ err, spaceId }, 'could not record what ran at lock'),
      );
    }
  }

  /**
   * After unlock: starts again what ran when the space was locked (containers from the space's
   * engine, whose store survived in the space; VMs from their definitions). A workload that
   * cannot start is logged and left stopped; the owner sees its state.
   */
  async restore(spaceId: string, mountpoint: string): Promise<void> {
    const s = this.c.d.spaces.get(spaceId);
    if (!s) return;
    const file = spaceDataLayout(mountpoint).runningAtLock;
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    await rm(file, { force: true });
    let running: RunningAtLock;
    try {
      running = JSON.parse(text) as RunningAtLock;
    } catch {
      return;
    }
    const known = new Set(this.c.d.workloads.list(spaceId).map((w) => w.id));
    if (this.c.d.containers && running.containers.length > 0) {
      const docker = await this.c.d.containers.driver(this.c.engineSpace(s, mountpoint));
      for (const id of running.containers.filter((i) => known.has(i)))
        await docker
          .start(spaceId, id)
          .catch((err: unknown) => this.c.d.logger.warn({ err, spaceId, id }, 'container not restored'));
    }
    for (const id of (running.vms ?? []).filter((i) => known.has(i)))
      await this.c.d.vms
        ?.start(spaceId, id)
        .catch((err: unknown) => this.c.d.logger.warn({ err, spaceId, id }, 'VM not restored'));
  }

  /** Removes every container, VM, network (and its rules) and image name of the space, and forgets its records. */
  async removeAll(spaceId: string): Promise<void> {
    this.c.forget(spaceId);
    // The engine's store is in the space's storage, destroyed with it.
    if (this.c.d.containers) await this.c.d.containers.remove(this.c.engineGroups(spaceId));
    if (this.c.d.vms) await this.c.d.vms.removeAllForSpace(spaceId);
    await this.c.d.networks?.remove(spaceId);
    this.c.d.workloads.removeSpace(spaceId);
  }

  /**
   * On start, after the spaces are reconciled: workloads half-made when the daemon died are
   * undone, an engine left running for a space that is not active is stopped, and containers
   * and VMs that no record explains are removed. Records are the truth for what a space holds;
   * the host for what exists.
   */
  async reconcile(): Promise<{
    undone: string[];
    orphanContainers: string[];
    orphanVms: string[];
    orphanSpaces: string[];
  }> {
    const report = {
      undone: [] as string[],
      orphanContainers: [] as string[],
      orphanVms: [] as string[],
      orphanSpaces: [] as string[],
    };
    const records = this.c.d.spaces.list({});
    const live = new Set(records.filter((r) => ['active', 'locked', 'expired'].includes(r.state)).map((r) => r.id));
    const active = new Map(records.filter((r) => r.state === 'active').map((r) => [r.id, r]));
    // A space this database never knew is another daemon's (tests run several on one host):
    // it is never touched. Ours are recorded before any host object is made, so none is missed.
    const ours = new Set(records.map((r) => r.id));
    // Engines: one of a space that is not active any more is stopped (a gone one removed).
    if (this.c.d.containers)
      for (const spaceId of await this.c.d.containers.spacesWithRunDirs()) {
        if (!ours.has(spaceId) || active.has(spaceId)) continue;
        await this.c.d.containers.remove(this.c.engineGroups(spaceId));
        if (!live.has(spaceId)) report.orphanSpaces.push(spaceId);
      }
    for (const w of this.c.d.workloads.listAll()) {
      if (!live.has(w.spaceId)) {
        this.c.d.workloads.remove(w.id);
        continue;
      }
      // Half made, or half removed (a delete the daemon did not live to finish): undone alike.
      if (w.state !== 'creating' && w.removingSince === null) continue;
      const space = active.get(w.spaceId);
      switch (w.kind) {
        case 'container':
          // Only an active space's engine can be asked; otherwise the record waits for a later start.
          if (!space) continue;
          await (
            await this.c.containerDriver(space)
          )
            .remove(w.spaceId, w.id)
            .catch((err: unknown) => this.c.ignoreGone(err));
          break;
        case 'vm':
          await this.c.d.vms
            ?.stop(w.spaceId, w.id, { graceSeconds: 0 })
            .catch((err: unknown) => this.c.ignoreGone(err));
          await this.c.d.vms?.undefine(w.spaceId, w.id).catch((err: unknown) => this.c.ignoreGone(err));
          break;
        case 'volume': {
          // Only while the space is unlocked can its volume and key be removed; otherwise the
          // record stays `creating` (it still counts against the budget) until a later start.
          const info = await this.c.d.storage.info(w.spaceId).catch(() => undefined);
          if (!info?.unlocked) continue;
          await this.c.d.storage.destroyVolume(w.spaceId, w.id);
          await shredVolumeKey(spaceDataLayout(info.mountpoint).keys, w.id);
          break;
        }
      }
      this.c.d.workloads.remove(w.id);
      report.undone.push(w.id);
    }
    const known = new Set(this.c.d.workloads.listAll().map((w) => w.id));
    // Containers: each active space's engine, if it is running, lists what it holds.
    if (this.c.d.containers)
      for (const [spaceId, space] of active) {
        const info = await this.c.d.storage.info(spaceId).catch(() => undefined);
        if (!info?.unlocked || !existsSync(join(spaceDataLayout(info.mountpoint).engine, 'storage'))) continue;
        const docker = await this.c.d.containers.driver(this.c.engineSpace(space, info.mountpoint));
        for (const c of await docker.list(spaceId)) {
          if (known.has(c.containerId)) continue;
          await docker.remove(spaceId, c.containerId).catch((err: unknown) => this.c.ignoreGone(err));
          report.orphanContainers.push(c.containerId);
        }
      }
    if (this.c.d.vms)
      for (const [spaceId, ids] of await this.c.d.vms.listAllSpaces()) {
        if (!ours.has(spaceId)) continue;
        if (!live.has(spaceId)) {
          await this.c.d.vms.removeAllForSpace(spaceId);
          report.orphanSpaces.push(spaceId);
          continue;
        }
        for (const id of ids.filter((i) => !known.has(i))) {
          await this.c.d.vms.stop(spaceId, id, { graceSeconds: 0 }).catch((err: unknown) => this.c.ignoreGone(err));
          await this.c.d.vms.undefine(spaceId, id).catch((err: unknown) => this.c.ignoreGone(err));
          report.orphanVms.push(id);
        }
      }
    if (Object.values(report).some((v) => v.length > 0)) this.c.d.logger.warn(report, 'reconciled workloads');
    return report;
  }
}
