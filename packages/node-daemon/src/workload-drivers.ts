/**
 * Picks the workload drivers from config: Docker and libvirt are used when enabled, or, with
 * `auto`, when their daemon answers at start. A node without them still reserves spaces; their
 * container and VM calls are then `unavailable`.
 */
import { createDockerDriver, createVmDriver, guardHostInput, type DockerDriver, type VmDriver } from '@ocs/host';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export async function openWorkloadDrivers(
  config: Config,
  logger: Logger,
): Promise<{ docker: DockerDriver | undefined; vms: VmDriver | undefined }> {
  let docker: DockerDriver | undefined;
  const d = config.workloads.docker;
  if (d.enabled !== false) {
    const candidate = createDockerDriver({ socketPath: d.socket });
    try {
      await candidate.listAllSpaces();
      // Fail closed: without the rule every container could reach the daemon's port.
      await guardHostInput();
      docker = candidate;
    } catch (err) {
      if (d.enabled === true) throw err;
      logger.warn(
        { socket: d.socket, err },
        'dockerd does not answer, or the host could not be shielded from space bridges: containers are off on this node',
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
  return { docker, vms };
}
