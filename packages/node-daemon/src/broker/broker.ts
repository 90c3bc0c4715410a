/**
 * The privileged broker's gate: the only code that turns a space's wishes into host objects. It
 * is called with the space id its socket belongs to, never one the caller names, and re-checks
 * everything itself: the arguments against the schemas, the space's state, then hands the call to
 * the part for its kind (volumes, containers, VMs), which checks the space's remaining budget
 * (summed in one transaction), that every path lies in the space's own storage, and that every
 * container and VM lands in the space's cgroup. The drivers add the hardening on top. What acts
 * on a space's workloads as a whole (lock, unlock, destroy, reconciliation) is
 * `spaces/workload-lifecycle.ts`.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BROKER_OPS,
  OcsError,
  isBrokerOp,
  isReadOnlyOp,
  isOcsError,
  validate,
  type BrokerArgs,
  type BrokerOp,
  type BrokerResult,
  type HostPart,
} from '@ocs/protocol';
import type { SpaceRow } from '../state/index.js';
import { ContainerOps } from './containers.js';
import { budgetOf, type BrokerContext } from './context.js';
import { removeRecord } from './records.js';
import { NetworkOps } from './network.js';
import { VmOps } from './vms.js';
import { VolumeOps } from './volumes.js';

export { BrokerContext, budgetOf, type BrokerDeps, type ContainerEngines } from './context.js';

type Handler<O extends BrokerOp> = (space: SpaceRow, args: BrokerArgs<O>) => Promise<BrokerResult<O>>;

export class Broker {
  private readonly handlers: { [O in BrokerOp]: Handler<O> };

  constructor(readonly context: BrokerContext) {
    const d = context.d;
    const c = context;
    const volumes = new VolumeOps(context);
    const containers = new ContainerOps(context);
    const vms = new VmOps(context);
    const network = new NetworkOps(context);
    this.handlers = {
      status: async (s) => {
        const used = d.workloads.used(s.id);
        const counts = d.workloads.counts(s.id);
        return {
          spaceId: s.id,
          resources: budgetOf(s) as BrokerResult<'status'>['resources'],
          used,
          volumes: counts.volume,
          containers: counts.container,
          vms: counts.vm,
        };
      },
      createVolume: (s, a) => volumes.createVolume(s, a),
      listVolumes: async (s) => ({ volumes: d.workloads.list(s.id, 'volume').map((w) => volumes.volumeView(s, w)) }),
      deleteVolume: (s, a) => volumes.deleteVolume(s, a.volume),
      loadImage: (s, a) => containers.loadImage(s, a.image, a.file),
      listImages: async (s) => ({
        images: (await (await c.containerDriver(s)).listImages(s.id)).map((i) => ({
          name: i.name,
          tag: 'latest',
          dockerId: i.dockerId,
          sizeBytes: i.sizeBytes,
          loadedAt: new Date(i.created).toISOString(),
        })),
      }),
      deleteImage: async (s, a) => {
        await (await c.containerDriver(s)).removeImage(s.id, a.image);
        return {};
      },
      createContainer: (s, a) => containers.createContainer(s, a),
      listContainers: async (s) => ({ containers: await containers.listViews(s) }),
      getContainer: (s, a) => containers.operate(s, a.container, (w) => containers.containerView(s, w)),
      startContainer: (s, a) =>
        containers.operate(s, a.container, async (w) => {
          await (await c.containerDriver(s)).start(s.id, w.id);
          return containers.containerView(s, w);
        }),
      stopContainer: (s, a) =>
        containers.operate(s, a.container, async (w) => {
          await (await c.containerDriver(s)).stop(s.id, w.id);
          return containers.containerView(s, w);
        }),
      deleteContainer: async (s, a) => {
        const w = d.workloads.get(s.id, 'container', a.container);
        // Marked first: a daemon killed from here on finishes the removal at its next start.
        d.workloads.markRemoving(w.id);
        // Idempotent against a container already gone (a crash after the engine removed it,
        // before the record went): the owner's retry removes the record instead of a 404 forever.
        await (await c.containerDriver(s)).remove(s.id, w.id).catch((err: unknown) => c.ignoreGone(err));
        d.workloads.remove(w.id);
        // What it published went with its record: the space's rules follow.
        await d.networks?.update(s.id);
        return {};
      },
      containerLogs: (s, a) =>
        containers.operate(s, a.container, async (w) =>
          (await c.containerDriver(s)).logs(s.id, w.id, { tailLines: a.tail }),
        ),
      containerStats: (s, a) =>
        containers.operate(s, a.container, async (w) => (await c.containerDriver(s)).stats(s.id, w.id)),
      createVm: (s, a) => vms.createVm(s, a),
      listVms: async (s) => ({
        vms: await Promise.all(d.workloads.list(s.id, 'vm').map((w) => vms.vmView(s, w))),
      }),
      getVm: (s, a) => vms.vmView(s, d.workloads.get(s.id, 'vm', a.vm)),
      startVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        await c.vmDriver().start(s.id, w.id);
        return vms.vmView(s, w);
      },
      stopVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        await c.vmDriver().stop(s.id, w.id, { graceSeconds: 10 });
        return vms.vmView(s, w);
      },
      deleteVm: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        // Idempotent against a domain already gone, as for containers.
        await c
          .vmDriver()
          .stop(s.id, w.id, { graceSeconds: 0 })
          .catch((err: unknown) => c.ignoreGone(err));
        await c
          .vmDriver()
          .undefine(s.id, w.id)
          .catch((err: unknown) => c.ignoreGone(err));
        await rm(join((await c.data(s)).vms, w.id), { recursive: true, force: true });
        await removeRecord((await c.data(s)).records, w.id);
        d.workloads.remove(w.id);
        await d.networks?.update(s.id);
        return {};
      },
      vmConsole: async (s, a) => {
        const w = d.workloads.get(s.id, 'vm', a.vm);
        return c.vmDriver().readConsole(s.id, w.id, { tailBytes: a.tail });
      },
      getNetwork: async (s) => network.view(s),
      setEgress: (s, a) => network.setEgress(s, a),
      publishPort: (s, a) => network.publishPort(s, a),
      unpublishPort: (s, a) => network.unpublishPort(s, a),
      issuerKeys: async () => d.issuerKeys(),
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
      const e = isOcsError(err) ? err : hostFailed(op);
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

/** How `host_failed` names each part of the host. */
const PART_NAMES: Record<HostPart, string> = {
  engine: 'the container engine',
  libvirt: 'libvirt/QEMU',
  storage: 'the storage',
  firewall: "the node's firewall",
  host: 'the host',
};

/** A host failure the caller cannot fix, named by the part of the host its operation declares; the detail is in the log. */
export function hostFailed(op: BrokerOp): OcsError {
  const part = PART_NAMES[BROKER_OPS[op].part];
  return new OcsError('host_failed', `${part} failed to carry out ${op}; the node's log has the detail`, { op });
}
