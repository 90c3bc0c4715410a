/**
 * Where a space lives on the host. One function so the service, the supervisor, the broker and
 * reconciliation can never disagree about a path.
 */
import { join } from 'node:path';

export function spaceCgroupLayout(parent: string, spaceId: string) {
  const space = `${parent}/${spaceId}`;
  return { space, api: `${space}/api`, workloads: `${space}/workloads` };
}

export function spaceRunDir(runDir: string, spaceId: string) {
  const dir = join(runDir, 'spaces', spaceId);
  return {
    dir,
    apiSocket: join(dir, 'api.sock'),
    brokerSocket: join(dir, 'broker.sock'),
    config: join(dir, 'config.json'),
  };
}

export interface SpaceLimitsInput {
  cpuMillicores: number;
  memoryBytes: number;
  pids: number | null;
}

/**
 * Limits of a space's three groups. Memory and pids bound the whole space, its API process
 * included (the tenant pays for it). CPU: the reservation goes to the workloads; the API process
 * gets a control-plane allowance of its own so that a 0.1-core space still starts its API in well
 * under a second. The space-level quota is the sum, so neither can take the other's share.
 */
export function spaceCgroupLimits(row: SpaceLimitsInput, apiCpuMillicores: number) {
  const common = { memoryBytes: row.memoryBytes, ...(row.pids ? { pids: row.pids } : {}) };
  return {
    space: { ...common, cpuMillicores: row.cpuMillicores + apiCpuMillicores },
    api: { ...common, cpuMillicores: apiCpuMillicores },
    workloads: { ...common, cpuMillicores: row.cpuMillicores },
  };
}
