/**
 * One bridge network per space, in the space's own engine, `internal`, on the subnet and bridge
 * name the daemon gives it.
 *
 * Why internal: a normal bridge routes (and NATs) everything beyond its subnet: the outside
 * world, the host's addresses, and every other space's bridge. podman's internal network (CNI)
 * puts no address of the host on the bridge and gives the containers a route to their own
 * subnet only, so a space's containers reach each other and nothing else, the host included
 * (tested). Nodes have no registry or internet access by design; egress, if it is ever wanted,
 * should be an explicit, audited path (a proxy), not a default. Should a bridge ever hold an
 * address of the host (dockerd's internal networks do: their gateway), the host's `INPUT` rule
 * on `ocsbr+` still drops what arrives from it (host-guard.ts, {@link bridgeName}).
 */
import { OcsError } from '@ocs/protocol';
import { call, libpod, type DriverContext } from './context.js';
import { statusOf, toOcsError } from './errors.js';
import { LABEL_SPACE, bridgeName, checkSpaceId, isSpaceId, networkName } from './names.js';

/** The space's network if it exists and is really ours (name and label), else undefined. */
async function findNetwork(ctx: DriverContext, spaceId: string): Promise<{ Id: string } | undefined> {
  const name = networkName(spaceId);
  let info;
  try {
    info = await ctx.docker.getNetwork(name).inspect();
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw toOcsError(err, 'look up the network');
  }
  const labels = (info.Labels ?? {}) as Record<string, string>;
  if (info.Name !== name) return undefined;
  if (labels[LABEL_SPACE] !== spaceId) {
    // A network of that name we did not create: never adopt it.
    throw new OcsError('conflict', 'a network with the space network name exists but is not the space network');
  }
  return { Id: info.Id as string };
}

export async function ensureNetwork(ctx: DriverContext, spaceId: string): Promise<string> {
  checkSpaceId(spaceId);
  return ctx.serialize(`net:${spaceId}`, async () => {
    const found = await findNetwork(ctx, spaceId);
    if (found) return found.Id;
    // Each space's engine knows only its own network, so the daemon hands out the subnets
    // (and the bridge name, which the host's guard matches).
    const created = await call('create the network', () =>
      libpod<{ id: string }>(ctx, 'POST', '/networks/create', {
        name: networkName(spaceId),
        driver: 'bridge',
        network_interface: bridgeName(spaceId),
        subnets: [{ subnet: ctx.podman.subnet }],
        internal: true,
        dns_enabled: false,
        ipv6_enabled: false,
        labels: { [LABEL_SPACE]: spaceId },
      }),
    );
    return created.id;
  });
}

export async function removeNetwork(ctx: DriverContext, spaceId: string): Promise<void> {
  checkSpaceId(spaceId);
  await ctx.serialize(`net:${spaceId}`, async () => {
    const found = await findNetwork(ctx, spaceId).catch((err: unknown) => {
      if (err instanceof OcsError && err.code === 'conflict') return undefined; // not ours: leave it alone
      throw err;
    });
    if (!found) return;
    // podman removes a network that containers still use (dockerd refuses while one runs): ask first,
    // stopped containers included, since they could not start again without it.
    const users = await call('list containers', () =>
      ctx.docker.listContainers({ all: true, filters: { network: [networkName(spaceId)] } }),
    );
    if (users.length > 0) throw new OcsError('conflict', 'containers of the space still use its network');
    try {
      // By id: the name could have been re-pointed between inspect and remove.
      await ctx.docker.getNetwork(found.Id).remove();
    } catch (err) {
      if (statusOf(err) !== 404) throw toOcsError(err, 'remove the network');
    }
  });
}

/** Every space that has a network here (by label, name checked). */
export async function networkSpaces(ctx: DriverContext): Promise<Set<string>> {
  const nets = await call('list networks', () => ctx.docker.listNetworks({ filters: { label: [LABEL_SPACE] } }));
  const spaces = new Set<string>();
  for (const n of nets) {
    const id = (n.Labels as Record<string, string> | undefined)?.[LABEL_SPACE];
    if (isSpaceId(id) && n.Name === networkName(id)) spaces.add(id);
  }
  return spaces;
}
