/**
 * A space's network as its owner changes it: egress within the farmer's policy, and ports of the
 * node published to its containers and VMs. Every change is recorded first and the space's
 * firewall table made again from the records, so what the kernel holds is always what the
 * records say (a failed apply is undone in the records before the refusal).
 */
import { OcsError, type BrokerArgs, type BrokerResult } from '@ocs/protocol';
import { hostPortsInUse } from '@ocs/host';
import type { SpaceRow } from '../state/index.js';
import { checkEgress } from '../spaces/egress-policy.js';
import type { WorkloadContext } from './context.js';
import type { HandlersOf, OperationModule } from './kind.js';

export class NetworkOps implements OperationModule<'network'> {
  readonly kinds = ['network'] as const;
  readonly handlers: HandlersOf<'network'>;

  constructor(private readonly c: WorkloadContext) {
    this.handlers = {
      getNetwork: async (s) => this.view(s),
      setEgress: (s, a) => this.setEgress(s, a),
      publishPort: (s, a) => this.publishPort(s, a),
      unpublishPort: (s, a) => this.unpublishPort(s, a),
    };
  }

  view(s: SpaceRow): BrokerResult<'getNetwork'> {
    return this.c.network().view(this.c.d.spaces.get(s.id) ?? s);
  }

  async setEgress(s: SpaceRow, a: BrokerArgs<'setEgress'>): Promise<BrokerResult<'setEgress'>> {
    const networks = this.c.network();
    checkEgress(this.c.d.nodeEgress, a.egress);
    const before = s.egress;
    const row = this.c.d.spaces.setEgress(s.id, a.egress);
    try {
      await networks.update(s.id);
    } catch (err) {
      this.c.d.spaces.setEgress(s.id, before);
      throw err;
    }
    return networks.view(row);
  }

  async publishPort(s: SpaceRow, a: BrokerArgs<'publishPort'>): Promise<BrokerResult<'publishPort'>> {
    const networks = this.c.network();
    const w = this.c.d.workloads.get(s.id, a.target.kind, a.target.name);
    if (w.address === null)
      throw new OcsError('conflict', `${a.target.kind} ${a.target.name} has no address of its own: make it again`, {
        [a.target.kind]: a.target.name,
      });
    const range = this.c.range();
    // Read just before the write: a host service that binds later is the farmer's range
    // overlapping its own services, which the start-up check and docs/operator-guide.md cover.
    const inUse = await (this.c.d.portsInUse ?? portsHeldByHost)();
    const row = this.c.d.ports.publish({ id: s.id, ports: s.ports }, range, {
      workloadId: w.id,
      protocol: a.protocol ?? 'tcp',
      port: a.port,
      ...(a.hostPort !== undefined ? { hostPort: a.hostPort } : {}),
      inUse,
    });
    try {
      await networks.update(s.id);
    } catch (err) {
      this.c.d.ports.unpublish(s.id, row.hostPort);
      throw err;
    }
    const view = networks.published(s.id).find((p) => p.hostPort === row.hostPort);
    if (!view) throw new OcsError('conflict', 'the port was unpublished meanwhile');
    return view;
  }

  async unpublishPort(s: SpaceRow, a: BrokerArgs<'unpublishPort'>): Promise<BrokerResult<'unpublishPort'>> {
    const networks = this.c.network();
    this.c.d.ports.unpublish(s.id, a.hostPort);
    await networks.update(s.id);
    return {};
  }
}

/** Either protocol: one port number is one forward (ports-repo.ts), TCP and UDP alike. */
export async function portsHeldByHost(): Promise<ReadonlySet<number>> {
  const [tcp, udp] = await Promise.all([hostPortsInUse('tcp'), hostPortsInUse('udp')]);
  return new Set([...tcp, ...udp]);
}
