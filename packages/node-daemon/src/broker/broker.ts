/**
 * The privileged broker's gate: the only code that turns a space's wishes into host objects. It
 * is called with the space id its connection belongs to, never one the caller names, and
 * re-checks everything itself: the arguments against the schemas, the space's state, then hands
 * the call to the module of the operation's kind (`workloads/`: volumes, containers, VMs, the
 * network), which checks the space's remaining budget (summed in one transaction), that every
 * path lies in the space's own storage, and that every container and VM lands in the space's
 * cgroup. The drivers add the hardening on top. What acts on a space's workloads as a whole
 * (lock, unlock, destroy, reconciliation) is `workloads/lifecycle.ts`.
 */
import {
  BROKER_OPS,
  OcsError,
  isBrokerOp,
  isReadOnlyOp,
  hostFailed,
  isOcsError,
  validate,
  type BrokerOp,
} from '@ocs/protocol';
import {
  budgetOf,
  type Handler,
  type HandlersOf,
  type NodeWorkloads,
  type OperationModule,
  type WorkloadContext,
} from '../workloads/index.js';

/** Every broker operation's handler. */
export type BrokerHandlers = { [O in BrokerOp]: Handler<O> };

/** The operations on the space as a whole. */
function spaceOperations(c: WorkloadContext): OperationModule<'space'> {
  const handlers: HandlersOf<'space'> = {
    status: async (s) => {
      const counts = c.d.workloads.counts(s.id);
      return {
        spaceId: s.id,
        resources: budgetOf(s),
        used: c.d.workloads.used(s.id),
        volumes: counts.volume,
        containers: counts.container,
        vms: counts.vm,
      };
    },
    issuerKeys: async () => c.d.issuerKeys(),
  };
  return { kinds: ['space'], handlers };
}

/**
 * The modules that carry out the broker's operations, one per operation kind (a workload kind's
 * module takes its related kinds: containers take images).
 */
export function operationModules(c: WorkloadContext, w: NodeWorkloads) {
  return [spaceOperations(c), w.volumes, w.containers, w.vms, w.network] as const;
}

export class Broker {
  readonly handlers: BrokerHandlers;

  constructor(
    readonly context: WorkloadContext,
    workloads: NodeWorkloads,
  ) {
    const [space, volumes, containers, vms, network] = operationModules(context, workloads);
    // Typed as every operation: one the catalogue adds without a handler does not compile.
    this.handlers = {
      ...space.handlers,
      ...volumes.handlers,
      ...containers.handlers,
      ...vms.handlers,
      ...network.handlers,
    };
  }

  /**
   * Runs one operation for `spaceId` (known from the socket, not from the caller). `op` and
   * `args` are untrusted. Refusals are audited with their code; unexpected failures become
   * `host_failed` (502, naming the part of the host that failed) after the detail went to the log.
   */
  async call(spaceId: string, op: string, args: unknown): Promise<unknown> {
    const actor = `space:${spaceId}`;
    if (!isBrokerOp(op)) throw new OcsError('not_found', 'no such broker operation');
    const mutating = !isReadOnlyOp(op);
    try {
      const checked = validate(BROKER_OPS[op].args, args);
      const space = this.context.d.spaces.get(spaceId);
      if (!space || space.state === 'destroyed' || space.state === 'destroying')
        throw new OcsError('not_found', 'no such space');
      if (space.state !== 'active') throw new OcsError('space_locked', 'the space is locked');
      const result = await (this.handlers[op] as Handler<BrokerOp>)(space, checked as never);
      if (mutating) this.context.d.audit.append({ actor, action: `broker.${op}`, target: spaceId, outcome: 'ok' });
      return result;
    } catch (err) {
      const e = isOcsError(err) ? err : hostFailed(op, BROKER_OPS[op].part);
      if (!isOcsError(err)) this.context.d.logger.error({ err, spaceId, op }, 'broker operation failed');
      this.context.d.refusals.record({
        // A read that finds nothing is routine: counted, not chained.
        chainAs: mutating || e.code !== 'not_found' ? { key: actor, actor } : undefined,
        action: `broker.${op}`,
        target: spaceId,
        code: e.code,
      });
      throw e;
    }
  }
}
