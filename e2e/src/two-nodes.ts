/**
 * Two real daemons on one machine, as two nodes: each with its own state, port, storage root,
 * cgroup parent, uid range, subordinate ids, subnets and ports (what lets several daemons share
 * a machine). For the tests of what goes from one node to another (a restore, a move).
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { bridgeName } from '@ocs/host';
import type { Ed25519PrivateKey } from '@ocs/protocol';
import type { OcsClient } from '@ocs/client';
import { daemonClient, daemonDir, kill9, startDaemon, type Daemon } from './daemon-process.js';
import { hostFirewall, removeSpaceRules } from './space-rules.js';

const MiB = 1024 ** 2;
export const SUBIDS = 65_536;
/** Where each node's subordinate ids begin: node A's, node B's. */
export const SUBIDS_OF = [1_300_000_000, 1_500_000_000] as const;

/** The uids the processes of a space's containers run as, root's left out (its cgroup v1 memory hierarchy). */
export function containerUids(parent: string, spaceId: string): Set<number> {
  const uids = new Set<number>();
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      let status = '';
      try {
        status = readFileSync(`/proc/${pid}/status`, 'utf8');
      } catch {
        continue; // gone meanwhile
      }
      const m = /^Uid:\s+(\d+)/m.exec(status);
      // Root's processes there are the engine's plumbing (conmon's helpers), not the container's.
      if (m && m[1] !== '0') uids.add(Number(m[1]));
    }
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
  };
  walk(`/sys/fs/cgroup/memory/${parent}/${spaceId}.space/workloads.slice/containers`);
  return uids;
}

export interface Node {
  dir: ReturnType<typeof daemonDir>;
  config: ReturnType<ReturnType<typeof daemonDir>['nodeConfig']>;
  daemon: Daemon;
  /** A client of the owner's, with a token of this node's dev issuer. */
  client: OcsClient;
  /** The space uids' first. */
  uidBase: number;
}

export interface TwoNodes {
  a: Node;
  b: Node;
  /** Spaces the test made on either node: their bridges and rules go at the end. */
  spaces: Set<string>;
  /** Starts a node again on its own state and port (after a kill -9), with `env` (e.g. failpoints). */
  restart(n: Node, env?: Record<string, string>): Promise<void>;
  close(): Promise<void>;
}

/** A TCP port free on loopback now (each node keeps its own across restarts: a move names it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts nodes A and B for `owner`'s clients (org `org`). */
export async function twoNodes(
  names: [string, string],
  owner: Ed25519PrivateKey,
  org: string,
  roles: string[] = ['spaces', 'storage', 'containers'],
  o: {
    /** B takes the drains of the nodes whose identity keys this answers (given A's): its `moves.peers`. */
    peersOfB?: (aIdentityKey: string) => string[];
  } = {},
): Promise<TwoNodes> {
  const dirs = [daemonDir(names[0]), daemonDir(names[1])] as const;
  const octet = 200 + (parseInt(dirs[0].tag, 16) % 40);
  const runs = dirs.map((d, n) => `/run/ocs-${'ab'[n]}${d.tag}`);
  const ports = [await freePort(), await freePort()];
  const configs = dirs.map((d, n): Node['config'] => ({
    ...d.nodeConfig({
      // Disjoint whatever the tags: each picks a slot of 1000 uids (and 1000 QEMU uids above
      // them) in a range of its own, so no id of A is ever one of B's (the tests check owners).
      uidFirst: 810_000 + n * 1_010_000,
      storageBytes: 2048 * MiB,
      containersRunRoot: runs[n]!,
      network: {
        subidBase: SUBIDS_OF[n]!,
        subnetPool: `10.${octet + n}.0.0/16`,
        ports: { first: 32_000 + n * 100, last: 32_099 + n * 100 },
      },
    }),
    listen: { host: '127.0.0.1', port: ports[n]! },
  }));
  const nodeTableWasThere = await hostFirewall().installed();
  const spaces = new Set<string>();
  const nodes: Node[] = [];
  const start = async (n: number, env?: Record<string, string>): Promise<Node> => {
    const daemon = await startDaemon(dirs[n]!.write(configs[n]!), 60_000, env ? { env } : {});
    const config = configs[n]!;
    return {
      dir: dirs[n]!,
      config,
      daemon,
      client: daemonClient(config.stateDir, daemon, { roles: roles as never, org, owner }),
      uidBase: (config.spaces as { uidBase: number }).uidBase,
    };
  };
  const close = async () => {
    for (const n of nodes) {
      await kill9(n.daemon);
      n.client.close();
    }
    for (const d of dirs) await d.remove();
    for (const run of runs) rmSync(run, { recursive: true, force: true });
    for (const id of spaces) {
      const bridge = bridgeName(id);
      if (existsSync(`/sys/class/net/${bridge}`)) execFileSync('ip', ['link', 'delete', bridge]);
    }
    await removeSpaceRules(spaces, nodeTableWasThere).catch(() => undefined);
  };
  try {
    nodes.push(await start(0));
    if (o.peersOfB) {
      const peers = o.peersOfB((await nodes[0]!.client.node.info()).identityKey);
      configs[1] = { ...configs[1]!, moves: { peers } } as Node['config'];
    }
    nodes.push(await start(1));
  } catch (err) {
    await close();
    throw err;
  }
  return {
    a: nodes[0]!,
    b: nodes[1]!,
    spaces,
    restart: async (n, env) => {
      const i = nodes.indexOf(n);
      await kill9(n.daemon);
      n.client.close();
      Object.assign(n, await start(i, env));
    },
    close,
  };
}
