/**
 * Starts a real node daemon in this process (real cgroups, real fscrypt images, real space
 * processes) under names and directories unique to the test run, and removes exactly those.
 */
import { mkdtempSync, rmSync, existsSync, readFileSync, chmodSync, lstatSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { Encrypter, armor } from 'age-encryption';
import Dockerode from 'dockerode';
import {
  SpaceEngines,
  createVmDriver,
  detectCgroups,
  createStorageDriver,
  type CgroupDriver,
  type EngineSpace,
  type StorageDriver,
  type VmDriver,
} from '@ocs/host';
import { buildBusyboxImage } from '@ocs/host/testing';
import type { ManualClock } from '@ocs/node-daemon/testing';
import {
  resolveConfig,
  spacesFirewall,
  startNode,
  createLogger,
  spaceCgroupLayout,
  spaceDataLayout,
  spaceWorkloadIds,
  type RunningNode,
  type Config,
  type Clock,
} from '@ocs/node-daemon';
import { OcsClient } from '@ocs/client';
import { removeSpaceRules } from './space-rules.js';
import {
  contentDigest,
  generatePrivateKey,
  mintToken,
  NODE_HEADER,
  signRequest,
  type Container,
  type CreateSpaceResponse,
  type Ed25519PrivateKey,
  type Resources,
  type Role,
  type Space,
} from '@ocs/protocol';
import { createPrivateKey } from 'node:crypto';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

export interface TestNode {
  node: RunningNode;
  config: Config;
  cgroups: CgroupDriver;
  storage: StorageDriver;
  /** Present with `workloads: true`: the spaces' podman engines. */
  containers: SpaceEngines | undefined;
  /** dockerode on the space's own engine (started if idle), to read the live objects. */
  engine(spaceId: string): Promise<Dockerode>;
  /** The space's engine as the broker makes it (its store in the space, its ids and subnet). */
  engineSpace(spaceId: string): Promise<EngineSpace>;
  vms: VmDriver | undefined;
  clock: Clock;
  /** Everything the daemon logged, for the no-secrets-in-logs test. */
  logs: string[];
  token(roles: Role[], opts?: { org?: string; sub?: string }): Promise<string>;
  client(opts: { roles?: Role[]; org?: string; owner?: Ed25519PrivateKey; token?: () => Promise<string> }): OcsClient;
  /**
   * One signed request (for `path` on this node, or for a full `https://` URL of any node),
   * captured: its exact headers and body, to send again as they are
   * (`client({ token }).send(method, path, undefined, { raw: body, headers, sign: false })`).
   */
  captureSigned(
    owner: Ed25519PrivateKey,
    method: string,
    path: string,
    roles: Role[],
    json?: unknown,
  ): Promise<{ headers: Record<string, string>; body: Uint8Array | undefined; token: string }>;
  /** Seals a space key to the node's unlock recipient, as an owner would with `age -r`. */
  seal(key: Uint8Array): Promise<string>;
  /** Stops the daemon; unless keepHost, removes every host object and file this run made. */
  stop(opts?: { keepHost?: boolean }): Promise<void>;
  reuse: { dir: string; tag: string };
}

export interface TestNodeOptions {
  clock?: ManualClock;
  total?: { cpuMillicores: number; memoryBytes: number; storageBytes: number };
  idleSeconds?: number;
  /** How long a space's idle container engine lives (default 30 s). */
  engineIdleSeconds?: number;
  /** Real container engines (podman per space) and libvirtd behind the broker (they must be installed and running). */
  workloads?: boolean;
  /** Start again on the state of a previous test node (after `stop({ keepHost: true })`). */
  reuse?: { dir: string; tag: string };
  /** Listen on this port (default: any free one), e.g. the port of the node being restarted. */
  port?: number;
  /** Listen on this loopback address (default 127.0.0.1). */
  listenHost?: string;
  /** Merged over the defaults' `auth` (e.g. remote issuers); the dev issuer stays on unless set. */
  auth?: Record<string, unknown>;
  /** Merged over the defaults' `workloads.network` (the spaces' firewall policy, the port range). */
  network?: Record<string, unknown>;
}

/**
 * Whether a node of this test process brought the node's table: then the last of them to stop
 * removes it (several nodes may run at once, and restarts reuse a stopped one's state).
 */
let broughtNodeTable = false;

export async function startTestNode(opts: TestNodeOptions = {}): Promise<TestNode> {
  const tag = opts.reuse?.tag ?? randomBytes(4).toString('hex');
  const dir = opts.reuse?.dir ?? mkdtempSync(join(tmpdir(), `ocs-e2e-${tag}-`));
  // Space processes run as their own uids and must be able to reach their socket directory.
  chmodSync(dir, 0o711);
  const config = resolveConfig({
    stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'),
    listen: { host: opts.listenHost ?? '127.0.0.1', port: opts.port ?? 0 },
    storage: { backend: 'fscrypt', root: join(dir, 'storage') },
    cgroups: { parent: `ocs-test-${tag}.slice` },
    capacity: { farmerReserve: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 } },
    spaces: {
      uidBase: 300_000 + (parseInt(tag, 16) % 1000) * 1000,
      uidCount: 1000,
      // Checked against this host's accounts, never recorded in its /etc/subuid: a test leaves
      // the host as it was (the guest tier's node records them, on a guest of its own).
      reserveIds: false,
      idleSeconds: opts.idleSeconds ?? 30,
      graceSeconds: 60,
    },
    log: { level: 'debug' },
    ...(opts.auth ? { auth: opts.auth } : {}),
    // Each run its own ports (other nodes on this host publish too): 16 from a slot of the tag.
    workloads: {
      network: {
        ports: { first: 40_000 + (parseInt(tag, 16) % 1500) * 16, last: 40_015 + (parseInt(tag, 16) % 1500) * 16 },
        ...opts.network,
      },
    },
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      // OCS_E2E_LOGS=1 shows the daemon's log while debugging a test.
      if (process.env.OCS_E2E_LOGS) process.stderr.write(chunk);
      cb();
    },
  });
  const logger = createLogger({ level: 'debug', destination: sink });
  const cgroups = await detectCgroups();
  const storage = await createStorageDriver(config.storage);
  const clock = opts.clock ?? { now: () => Date.now() };
  const containers = opts.workloads
    ? new SpaceEngines({ runRoot: `/run/ocs-t-${tag}`, cgroups, idleSeconds: opts.engineIdleSeconds ?? 30 })
    : undefined;
  const engineGroups = (id: string) => {
    const l = spaceCgroupLayout(config.cgroups.parent, id);
    return { spaceId: id, engineGroup: l.engine, containersGroup: l.containers };
  };
  // As the daemon does with workloads on; the node's table is removed at stop only if this node
  // brought it (and no space of another has rules).
  const firewall = opts.workloads ? spacesFirewall(config) : undefined;
  if (firewall && !broughtNodeTable && !(await firewall.installed())) broughtNodeTable = true;
  const removeRules = async (ids: string[]) => {
    if (!firewall) return;
    // The node's table goes only once no space of any node has rules.
    await removeSpaceRules(ids, !broughtNodeTable);
    if (!(await firewall.installed())) broughtNodeTable = false;
  };
  // TCG, always: a KVM that only looks usable must not decide whether the suite passes.
  const vms = opts.workloads
    ? await createVmDriver({
        accelerator: 'tcg',
        // This run's own (removed at stop), not the node's default /run/ocs-vm-boot.
        stagingDir: `/run/ocs-tv-${tag}`,
        vmsDir: async (id) => {
          const info = await storage.info(id).catch(() => undefined);
          return info?.unlocked ? spaceDataLayout(info.mountpoint).vms : undefined;
        },
      })
    : undefined;
  let node: RunningNode;
  try {
    node = await startNode({
      config,
      logger,
      drivers: { cgroups, storage, containers, vms, firewall },
      clock,
      total: opts.total ?? { cpuMillicores: 64_000, memoryBytes: 4 * GiB, storageBytes: 4 * GiB },
    });
  } catch (err) {
    // A node that fails to start (e.g. in a restart's reconciliation) is never stopped by its
    // test: remove what this run made here, by its own ids, before failing.
    const made = await storage.list().catch(() => [] as string[]);
    for (const id of made) {
      await containers?.remove(engineGroups(id)).catch(() => undefined);
      await vms?.removeAllForSpace(id).catch(() => undefined);
      await storage.destroy(id).catch(() => undefined);
    }
    await removeRules(made).catch(() => undefined);
    await storage.close().catch(() => undefined);
    await vms?.close().catch(() => undefined);
    rmSync(`/run/ocs-t-${tag}`, { recursive: true, force: true });
    rmSync(`/run/ocs-tv-${tag}`, { recursive: true, force: true });
    for (const child of await cgroups.children(config.cgroups.parent).catch(() => [] as string[]))
      await cgroups.destroy(`${config.cgroups.parent}/${child}`).catch(() => undefined);
    await cgroups.destroy(config.cgroups.parent).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const issuer = node.devIssuer!;
  const token = (roles: Role[], o: { org?: string; sub?: string } = {}) =>
    mintToken({
      privateKey: createPrivateKey(readFileSync(join(config.stateDir, 'keys', 'dev-issuer.pem'), 'utf8')),
      kid: issuer.kid,
      alg: 'EdDSA',
      issuer: issuer.issuer,
      audience: node.nodeId,
      subject: o.sub ?? 'tester',
      org: o.org ?? 'org-a',
      roles,
      now: new Date(clock.now()),
    });
  async function engineSpace(spaceId: string): Promise<EngineSpace> {
    const row = node.repo.get(spaceId);
    if (!row) throw new Error(`no space ${spaceId}`);
    const { mountpoint } = await storage.info(spaceId);
    return {
      ...engineGroups(spaceId),
      dataDir: spaceDataLayout(mountpoint).engine,
      // The recorded ones (the broker records them at the space's first container).
      ...node.repo.workloadIds(
        spaceId,
        spaceWorkloadIds({ uidBase: config.spaces.uidBase, ...config.workloads.containers }, row.uid),
      ),
    };
  }
  let stopped = false;
  return {
    node,
    config,
    cgroups,
    storage,
    containers,
    engineSpace,
    async engine(spaceId) {
      if (!containers) throw new Error('this test node runs no containers');
      await containers.ensure(await engineSpace(spaceId));
      return new Dockerode({ socketPath: containers.layout({ spaceId, dataDir: '' }).socket, version: 'v1.41' });
    },
    vms,
    clock,
    logs,
    token,
    client: (c) =>
      new OcsClient({
        url: node.url,
        ca: node.tls.cert,
        token: c.token ?? (() => token(c.roles ?? ['spaces'], { ...(c.org ? { org: c.org } : {}) })),
        ...(c.owner ? { ownerKey: c.owner } : {}),
      }),
    async captureSigned(owner, method, path, roles, json) {
      // A full URL signs for whatever node it names (the cross-node replay tests).
      const url = path.startsWith('https://') ? path : `${node.url}${path}`;
      const tok = await token(roles);
      const body = json === undefined ? undefined : new TextEncoder().encode(JSON.stringify(json));
      const headers: Record<string, string> = {
        authorization: `Bearer ${tok}`,
        host: new URL(url).host,
        // Signed for this node, as the SDK signs (the certificate it pinned).
        [NODE_HEADER]: node.tls.fingerprint,
      };
      if (body) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(body.length);
        headers['content-digest'] = contentDigest(body);
      }
      Object.assign(
        headers,
        await signRequest(
          { method, url, headers },
          { keyId: owner.publicKey.fingerprint(), sign: (m) => owner.sign(m) },
        ),
      );
      return { headers, body, token: tok };
    },
    async seal(key) {
      const e = new Encrypter();
      e.addRecipient(node.identity.unlockRecipient);
      return armor.encode(await e.encrypt(key));
    },
    reuse: { dir, tag },
    async stop(o = {}) {
      if (stopped) return;
      stopped = true;
      const spaceIds = node.repo.list({}).map((r) => r.id);
      await node.stop();
      if (o.keepHost) {
        // The rules stay, as after a crash: the node started on this state reconciles them.
        await vms?.close();
        return;
      }
      // Containers and VMs of this run's spaces, by their space ids.
      for (const id of spaceIds) {
        await containers?.remove(engineGroups(id));
        await vms?.removeAllForSpace(id);
      }
      rmSync(`/run/ocs-t-${tag}`, { recursive: true, force: true });
      rmSync(`/run/ocs-tv-${tag}`, { recursive: true, force: true });
      await vms?.close();
      await removeRules(spaceIds);
      // Remove what this run made, by its own ids: spaces first, then the cgroup parent and files.
      for (const id of await storage.list()) await storage.destroy(id);
      await storage.close();
      for (const child of await cgroups.children(config.cgroups.parent).catch(() => [] as string[])) {
        await cgroups.destroy(`${config.cgroups.parent}/${child}`);
      }
      await cgroups.destroy(config.cgroups.parent).catch(() => undefined);
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export { generatePrivateKey };

/** Polls `fn` every 200 ms until it returns something, or fails after `ms` naming `what`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * The busybox image of this run, as an owner uploads it: its `docker save` tarball, and the
 * directory it was saved in, which the caller removes.
 */
export async function busyboxTar(): Promise<{ tar: Buffer; dir: string }> {
  const path = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
  try {
    return { tar: readFileSync(path), dir: dirname(path) };
  } catch (err) {
    rmSync(dirname(path), { recursive: true, force: true });
    throw err;
  }
}

/**
 * In a space: loads `image` as `busybox`, makes a volume `data` and starts a container `web`
 * running `sh -c script` with `data` at `/data` (what the restore tests write their markers with).
 */
export async function webWithVolume(api: OcsClient, base: string, image: Buffer, script: string): Promise<Container> {
  await api.call('POST', `${base}/images/busybox`, undefined, { raw: image });
  await api.call('POST', `${base}/volumes`, { name: 'data', sizeBytes: 16 * MiB });
  return (
    await api.call<Container>('POST', `${base}/containers`, {
      name: 'web',
      image: 'busybox',
      command: ['sh', '-c', script],
      cpuMillicores: 100,
      memoryBytes: 32 * MiB,
      mounts: [{ volume: 'data', target: '/data' }],
    })
  ).body;
}

/** Every owner (uid and gid) of what lies under `root`, links not followed. */
export function ownersUnder(root: string): Set<number> {
  const out = new Set<number>();
  const walk = (p: string) => {
    const st = lstatSync(p);
    out.add(st.uid).add(st.gid);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(root);
  return out;
}

/** The first entry under `root` (not following links) that `id` owns as its uid or gid: what a failed owner check names. */
export function ownedBy(root: string, id: number): string | undefined {
  const walk = (p: string): string | undefined => {
    const st = lstatSync(p);
    if (st.uid === id || st.gid === id) return `${p} (uid ${st.uid}, gid ${st.gid})`;
    if (!st.isDirectory()) return undefined;
    for (const e of readdirSync(p)) {
      const found = walk(join(p, e));
      if (found) return found;
    }
    return undefined;
  };
  return walk(root);
}

/** A space and its owner, with a client that signs as the owner. */
export interface Owned {
  owner: Ed25519PrivateKey;
  space: Space;
  wrappedKey: string;
  /** Signed by the owner, with a token carrying the roles asked for. */
  api: OcsClient;
  /** The space's API base path. */
  base: string;
}

/**
 * Reserves a space of `resources` for a new owner (a token with `spaces`), for `leaseSeconds`,
 * and asserts it was made; its `api` carries `roles`. The caller (or the node's stop) destroys it.
 */
export async function reserveOwned(
  t: TestNode,
  resources: Resources,
  roles: Role[],
  leaseSeconds = 3600,
): Promise<Owned> {
  const owner = generatePrivateKey();
  const r = await t.client({ roles: ['spaces'], owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources,
    leaseSeconds,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const api = t.client({ roles, owner });
  return { owner, space: r.body.space, wrappedKey: r.body.wrappedKey, api, base: r.body.space.apiBase };
}

/**
 * Locks a space as a client that needs it locked does: the node answers within a second,
 * `locking` while the space still shuts down, and the state is polled until it is not.
 */
export async function lockSpace(
  api: { call<T>(method: string, path: string, body?: unknown): Promise<{ body: T }> },
  spaceId: string,
): Promise<Space> {
  let s = (await api.call<Space>('POST', `/v1/spaces/${spaceId}/lock`, {})).body;
  while (s.state === 'locking') {
    await new Promise((r) => setTimeout(r, 100));
    s = (await api.call<Space>('GET', `/v1/spaces/${spaceId}`)).body;
  }
  return s;
}
