/** Prometheus metrics: one registry per daemon, no global default registry. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface HttpMetrics {
  requestTimer(): (method: string, route: string, status: number) => void;
}

export function createMetrics(opts: {
  spacesByState(): Record<string, number>;
  runningProcesses(): number;
  capacity(): Record<string, { used: number; allocatable: number }>;
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ocs_node_' });
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
  new Gauge({
    name: 'ocs_capacity',
    help: 'Capacity by resource: allocatable and used',
    labelNames: ['resource', 'kind'],
    registers: [registry],
    collect() {
      for (const [resource, v] of Object.entries(opts.capacity())) {
        this.set({ resource, kind: 'allocatable' }, v.allocatable);
        this.set({ resource, kind: 'used' }, v.used);
      }
    },
  });
  const refusals = new Counter({
    name: 'ocs_refusals_total',
    help: 'Refused requests by code',
    labelNames: ['code'],
    registers: [registry],
  });
  const http: HttpMetrics = {
    requestTimer() {
      const end = duration.startTimer();
      return (method, route, status) => end({ method, route, status: String(status) });
    },
  };
  return { registry, http, refusals };
}
