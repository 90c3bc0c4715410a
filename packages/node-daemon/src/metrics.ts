/** Prometheus metrics: one registry per daemon, no global default registry. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface HttpMetrics {
  requestTimer(): (method: string, route: string, status: number) => void;
}

/** Capacity in the ledger's own units. */
export interface CapacityAmounts {
  cpuMillicores: number;
  memoryBytes: number;
  storageBytes: number;
}

// One unit per metric, and the base unit (Prometheus' naming guide): CPU in cores (a float),
// memory and storage in bytes. Allocatable and used are metrics of their own, not a label:
// summing them means nothing.
const CAPACITY = [
  { unit: 'cpu_cores', what: 'CPU', value: (c: CapacityAmounts) => c.cpuMillicores / 1000 },
  { unit: 'memory_bytes', what: 'Memory', value: (c: CapacityAmounts) => c.memoryBytes },
  { unit: 'storage_bytes', what: 'Storage', value: (c: CapacityAmounts) => c.storageBytes },
] as const;

export function createMetrics(opts: {
  spacesByState(): Record<string, number>;
  runningProcesses(): number;
  capacity(): { allocatable: CapacityAmounts; used: CapacityAmounts };
  /** Accounts and delegations that hold ids of the node's ranges now (spaces/id-ranges.ts). */
  idOverlaps?(): number;
}) {
  const registry = new Registry();
  // Stock names (process_*, nodejs_*), so the usual Node.js dashboards and alerts find them.
  collectDefaultMetrics({ register: registry });
  const duration = new Histogram({
    name: 'ocs_http_request_duration_seconds',
    help: 'HTTP request latency',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });
  new Gauge({
    name: 'ocs_spaces',
    help: 'Spaces by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(opts.spacesByState())) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'ocs_space_processes_running',
    help: 'Space API processes currently running',
    registers: [registry],
    collect() {
      this.set(opts.runningProcesses());
    },
  });
  for (const { unit, what, value } of CAPACITY) {
    for (const [kind, help] of [
      ['allocatable', `${what} the node offers to spaces (total less the farmer's reserve)`],
      ['used', `${what} reserved by live spaces`],
    ] as const) {
      new Gauge({
        name: `ocs_capacity_${kind}_${unit}`,
        help,
        registers: [registry],
        collect() {
          this.set(value(opts.capacity()[kind]));
        },
      });
    }
  }
  const refusals = new Counter({
    name: 'ocs_refusals_total',
    help: 'Refused requests by code',
    labelNames: ['code'],
    registers: [registry],
  });
  new Gauge({
    name: 'ocs_id_overlaps',
    help: "Accounts and subuid/subgid delegations that hold ids of the node's spaces (should be 0)",
    registers: [registry],
    collect() {
      this.set(opts.idOverlaps?.() ?? 0);
    },
  });
  const firewallRestored = new Counter({
    name: 'ocs_firewall_restored_total',
    help: "Times the watchdog found the spaces' network rules removed behind the daemon and made them again",
    registers: [registry],
  });
  const http: HttpMetrics = {
    requestTimer() {
      const end = duration.startTimer();
      return (method, route, status) => end({ method, route, status: String(status) });
    },
  };
  return { registry, http, refusals, firewallRestored };
}
