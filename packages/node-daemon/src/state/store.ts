/**
 * What the node's stores on its database share: the database, and the clock that stamps the
 * rows they write (the system's unless one is injected, as the tests freeze or advance it).
 */
import { systemClock, type Clock } from '../clock.js';
import type { Database } from './db.js';

export abstract class ClockedStore {
  protected readonly clock: Clock;

  constructor(
    readonly db: Database,
    clock: Clock | undefined,
  ) {
    this.clock = clock ?? systemClock;
  }
}

/** The four resource columns of a row (spaces, workloads), as the records name them. */
export function resourceColumns<P extends number | null>(r: {
  cpu_millicores: number;
  memory_bytes: number;
  storage_bytes: number;
  pids: P;
}): { cpuMillicores: number; memoryBytes: number; storageBytes: number; pids: P } {
  return { cpuMillicores: r.cpu_millicores, memoryBytes: r.memory_bytes, storageBytes: r.storage_bytes, pids: r.pids };
}
