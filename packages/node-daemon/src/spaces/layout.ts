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
  return { dir, apiSocket: join(dir, 'api.sock'), brokerSocket: join(dir, 'broker.sock'), config: join(dir, 'config.json') };
}
