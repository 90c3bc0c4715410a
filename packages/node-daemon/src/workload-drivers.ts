/**
 * Picks the workload drivers from config: Docker and libvirt are used when enabled, or, with
 * `auto`, when their daemon answers at start. A node without them still reserves spaces; their
 * container and VM calls are then `unavailable`.
 */
import {
  SpaceEngines,
  createVmDriver,
  guardHostInput,
  type CgroupDriver,
  type StorageDriver,
  type VmDriver,
} from '@ocs/host';
import { spaceDataLayout } from './spaces/layout.js';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export async function openWorkloadDrivers(
  config: Config,
  logger: Logger,
  cgroups: CgroupDriver,
  storage: StorageDriver,
): Promise<{ containers: SpaceEngines | undefined; vms: VmDriver | undefined }> {
  let containers: SpaceEngines | undefined;
  const c = config.workloads.containers;
  if (c.enabled !== false) {
    try {
      if (!existsSync('/usr/bin/podman') || !existsSync('/usr/bin/catatonit'))
        throw new Error('podman and catatonit are not installed (scripts/install-host-deps.sh)');
      // Fail closed: without the rule every container could reach the daemon's port.
      await guardHostInput();
      containers = new SpaceEngines({
        runRoot: c.runRoot ?? engineRunRoot(config.runDir),
        cgroups,
        idleSeconds: c.idleSeconds,
      });
    } catch (err) {
      if (c.enabled === true) throw err;
      logger.warn(
        { err },
        'no container engine, or the host could not be shielded from space bridges: containers are off on this node',
      );
    }
  }
  let vms: VmDriver | undefined;
  const v = config.workloads.libvirt;
  if (v.enabled !== false) {
    try {
      // The probe's verdict is kept there; on a first start the daemon has not made it yet.
      mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      vms = await createVmDriver({
        uri: v.uri,
        // Definitions live in the space (transient domains): reachable only while it is unlocked.
        vmsDir: async (spaceId) => {
          const info = await storage.info(spaceId).catch(() => undefined);
          return info?.unlocked ? spaceDataLayout(info.mountpoint).vms : undefined;
        },
        accelerator: v.accelerator,
        verdictFile: join(config.stateDir, 'accelerator.json'),
        ...(v.probeKernel === undefined ? {} : { probeKernel: v.probeKernel }),
      });
      logger.info({ accelerator: vms.accelerator, reason: vms.acceleratorReason }, 'VMs on');
    } catch (err) {
      if (v.enabled === true) throw err;
      logger.warn({ uri: v.uri }, 'libvirtd does not answer: VMs are off on this node');
    }
  }
  return { containers, vms };
}

/**
 * Short on purpose: podman limits a runroot to 50 characters, so `<root>/<space id>/rr` must fit;
 * a `runDir` too long for that needs `workloads.containers.runRoot`.
 */
export function engineRunRoot(runDir: string): string {
  return join(runDir, 'e');
}
