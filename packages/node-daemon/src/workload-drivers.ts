/**
 * Picks the workload drivers from config: Docker and libvirt are used when enabled, or, with
 * `auto`, when their daemon answers at start. A node without them still reserves spaces; their
 * container and VM calls are then `unavailable`.
 */
import {
  NetworkFirewall,
  nodeNetworks,
  SpaceEngines,
  createVmDriver,
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
): Promise<{
  containers: SpaceEngines | undefined;
  vms: VmDriver | undefined;
  firewall: NetworkFirewall | undefined;
}> {
  // The node's rules go in when the node starts (SpaceNetworks.reconcile), before any workload runs.
  const firewall = existsSync('/usr/sbin/nft') ? spacesFirewall(config) : undefined;
  let containers: SpaceEngines | undefined;
  const c = config.workloads.containers;
  if (c.enabled !== false) {
    try {
      if (!existsSync('/usr/bin/podman') || !existsSync('/usr/bin/catatonit'))
        throw new Error('podman and catatonit are not installed (scripts/install-host-deps.sh)');
      // Fail closed: without the node's rules a space's containers could reach the daemon's port.
      if (!firewall) throw new Error('nftables (/usr/sbin/nft) is not installed (scripts/install-host-deps.sh)');
      containers = new SpaceEngines({
        runRoot: c.runRoot ?? engineRunRoot(config.runDir),
        cgroups,
        idleSeconds: c.idleSeconds,
      });
    } catch (err) {
      if (c.enabled === true) throw err;
      logger.warn(
        { err },
        "no container engine, or no nftables to rule the spaces' networks: containers are off on this node",
      );
    }
  }
  let vms: VmDriver | undefined;
  const v = config.workloads.libvirt;
  if (v.enabled !== false) {
    try {
      if (!firewall) throw new Error('nftables (/usr/sbin/nft) is not installed (scripts/install-host-deps.sh)');
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
      logger.warn({ uri: v.uri, err }, 'libvirtd does not answer, or no nftables: VMs are off on this node');
    }
  }
  return { containers, vms, firewall: containers || vms ? firewall : undefined };
}

/**
 * The node's firewall for the spaces' networks, with the farmer's policy. The networks the node
 * is on are denied too: no space reaches its neighbours, whatever the farmer listed; the
 * watchdog notices a network the node joins later and makes the rules again.
 */
export function spacesFirewall(config: Config): NetworkFirewall {
  const n = config.workloads.network;
  return new NetworkFirewall({
    nodeNetworks: () => nodeNetworks(),
    policy: {
      denied: n.denied,
      dns: n.dns,
      maxConnections: n.maxConnections,
      ...(n.egressBytesPerSecond === undefined ? {} : { egressBytesPerSecond: n.egressBytesPerSecond }),
    },
  });
}

/**
 * Short on purpose: podman limits a runroot to 50 characters, so `<root>/<space id>/rr` must fit;
 * a `runDir` too long for that needs `workloads.containers.runRoot`.
 */
export function engineRunRoot(runDir: string): string {
  return join(runDir, 'e');
}
