/**
 * The workload kinds of a node, made once and shared by the broker (their operations) and the
 * space's life (`WorkloadLifecycle`).
 */
import { Containers } from './containers.js';
import type { WorkloadContext } from './context.js';
import { NetworkOps } from './network.js';
import { Vms } from './vms.js';
import { Volumes } from './volumes.js';

export { WorkloadContext, budgetOf, type WorkloadDeps, type ContainerEngines } from './context.js';
export { WorkloadLifecycle, type ReconcileReport } from './lifecycle.js';
export type { Handler, HandlersOf, OperationModule, WorkloadKind } from './kind.js';

export interface NodeWorkloads {
  volumes: Volumes;
  containers: Containers;
  vms: Vms;
  network: NetworkOps;
  /** The workload kinds in the order a space's life takes them: volumes open before what mounts them. */
  kinds: readonly [Volumes, Containers, Vms];
}

export function nodeWorkloads(c: WorkloadContext): NodeWorkloads {
  const volumes = new Volumes(c);
  const containers = new Containers(c);
  const vms = new Vms(c);
  return { volumes, containers, vms, network: new NetworkOps(c), kinds: [volumes, containers, vms] };
}
