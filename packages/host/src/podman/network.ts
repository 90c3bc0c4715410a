/**
 * One bridge network per space, in the space's own engine, on the subnet and bridge name the
 * daemon gives it, defined by a CNI file the daemon writes (network-conflist.ts): the bridge holds
 * the workloads' gateway, and every forwarding and NAT decision is the node's nftables table for
 * the space (network/nft-rules.ts): replies to published ports, egress as the farmer and the owner
 * allow it, and never another space, the host itself, the metadata address or the node's other
 * networks. Until the space's table is in, the node's table drops everything on the bridge.
 */
import { OcsError } from '@ocs/protocol';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverContext } from './context.js';
import { conflistFile, spaceNetworkConflist } from './network-conflist.js';
import { statusOf, toOcsError } from './errors.js';
import { LABEL_SPACE, checkSpaceId, networkName } from './names.js';

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

/**
 * Writes the space's network definition unless it is already the one wanted (a node upgraded from
 * internal networks gets its file replaced in place: containers name their network, not its file),
 * then returns the network's id as the engine knows it.
 */
export async function ensureNetwork(ctx: DriverContext, spaceId: string): Promise<string> {
  checkSpaceId(spaceId);
  return ctx.serialize(`net:${spaceId}`, async () => {
    // A network of the name that is not ours is refused before anything is written.
    await findNetwork(ctx, spaceId);
    const dir = ctx.podman.networksDir;
    const path = join(dir, conflistFile(spaceId));
    const want = `${JSON.stringify(spaceNetworkConflist(spaceId, ctx.podman.subnet), null, 2)}\n`;
    const have = await readFile(path, 'utf8').catch(() => undefined);
    if (have !== want) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // The engine reloads the directory when it changes: it must never see half a file.
      await writeFile(`${path}.tmp`, want, { mode: 0o600 });
      await rename(`${path}.tmp`, path);
    }
    const found = await findNetwork(ctx, spaceId);
    if (!found) throw new OcsError('unavailable', "the space's engine did not load its network");
    return found.Id;
  });
}
