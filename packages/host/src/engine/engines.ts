/**
 * One container engine per space: rootful podman whose image store, containers, logs and
 * network definition live in the space's own encrypted storage, served to the container driver
 * through podman's Docker-compatible API on a socket in the space's run directory.
 *
 * An engine runs only while it is used: `podman system service` exits after `idleSeconds`
 * without a request, and conmon keeps the space's containers running without it. It runs inside
 * a mount namespace of its own (see {@link namespaceBinds}), anchored by one tiny process, so
 * that nothing podman, runc or the CNI plugins write lands on the host's disk; the anchor, the
 * engine and every conmon are in the space's `engine` cgroup, charged to the space.
 *
 * A stop (lock, expiry, destroy) stops the containers, kills what is left in the engine's
 * group (which frees the namespace with its mounts) and removes the run directory.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, readlink, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { OcsError, isOcsError } from '@ocs/protocol';
import type { CgroupDriver } from '../cgroups/types.js';
import { run } from '../exec.js';
import { createContainerDriver } from '../podman/driver.js';
import { bridgeName, containerName, imageRef, parseImageRef } from '../podman/names.js';
import { isSpaceId } from '../space-id.js';
import type { ContainerDriver } from '../podman/types.js';
import {
  FUSE_OVERLAYFS,
  containersConf,
  engineEnv,
  engineLayout,
  namespaceBinds,
  podmanGlobalArgs,
  registriesConf,
  storageConf,
  type EngineLayout,
} from './config-files.js';

/** What the engine of one space is made from; all of it decided by the daemon. */
export interface EngineSpace {
  spaceId: string;
  /** Root-owned directory (0700) inside the space's encrypted storage. */
  dataDir: string;
  /** The space's subordinate ids: container uid/gid 0 is `base` on the host. */
  idMap: { base: number; size: number };
  /** The space's container network, e.g. `10.128.0.0/26`. */
  subnet: string;
  /** cgroup (driver-relative) for the anchor, the engine and conmon. Created if missing. */
  engineGroup: string;
  /** cgroup (driver-relative) under which the containers' groups go. Created if missing. */
  containersGroup: string;
}

export interface SpaceEnginesOptions {
  /** Where the engines' run directories go (tmpfs), e.g. `/run/ocs/engines`. */
  runRoot: string;
  cgroups: CgroupDriver;
  /** Where cgroup hierarchies are mounted. Default `/sys/fs/cgroup`. */
  cgroupRoot?: string;
  /** The engine exits after this long without a request. Default 60 s. */
  idleSeconds?: number;
  /** Passed to every space's driver. */
  maxImageBytes?: number;
  podman?: string;
  /** How long a stop lets containers shut down before SIGKILL. Default 5 s. */
  stopTimeoutSeconds?: number;
  /**
   * When the layers are mounted by fuse-overlayfs: `auto` (the default) where the store is on
   * ZFS, `always` everywhere (so a host without ZFS can test that path).
   */
  fuseOverlayfs?: 'auto' | 'always';
}

const READY_TIMEOUT_MS = 15_000;
/** The engine's own /dev/shm: podman's lock segment (a few hundred KiB) and nothing else of size. */
const ENGINE_SHM_BYTES = 16 * 1024 * 1024;

export class SpaceEngines {
  private readonly podman: string;
  private readonly idleSeconds: number;
  private readonly starting = new Map<string, Promise<void>>();
  private readonly drivers = new Map<string, ContainerDriver>();

  constructor(private readonly o: SpaceEnginesOptions) {
    // <runRoot>/sp_<20>/rr must stay within podman's 50 characters for a runroot.
    if (o.runRoot.length > 24 || !o.runRoot.startsWith('/'))
      throw new Error(
        `the engines' run root ${o.runRoot} must be absolute and at most 24 characters (podman limits its run paths): set workloads.containers.runRoot`,
      );
    this.podman = o.podman ?? '/usr/bin/podman';
    this.idleSeconds = o.idleSeconds ?? 60;
  }

  layout(space: Pick<EngineSpace, 'spaceId' | 'dataDir'>): EngineLayout {
    return engineLayout(space.dataDir, this.runDirOf(space.spaceId));
  }

  runDirOf(spaceId: string): string {
    if (!isSpaceId(spaceId)) throw new OcsError('invalid_request', 'not a space id');
    return join(this.o.runRoot, spaceId);
  }

  /** The space's container driver, its engine started first if it is not serving. */
  async driver(space: EngineSpace): Promise<ContainerDriver> {
    await this.ensure(space);
    let d = this.drivers.get(space.spaceId);
    if (!d) {
      d = createContainerDriver({
        socketPath: this.layout(space).socket,
        cgroupRoot: this.o.cgroupRoot,
        maxImageBytes: this.o.maxImageBytes,
        tmpDir: this.layout(space).tmp,
        podman: { idMap: space.idMap, subnet: space.subnet, networksDir: this.layout(space).networks },
      });
      this.drivers.set(space.spaceId, d);
    }
    return d;
  }

  /** Starts the space's engine unless it is serving. One start at a time per space. */
  async ensure(space: EngineSpace): Promise<void> {
    const l = this.layout(space);
    if (await ping(l.socket)) return;
    let p = this.starting.get(space.spaceId);
    if (!p) {
      p = this.startOrRestart(space, l).finally(() => this.starting.delete(space.spaceId));
      this.starting.set(space.spaceId, p);
    }
    await p;
  }

  /**
   * Starts the engine; one that does not come up is killed with everything of it and started
   * once more from its store. A daemon killed while it stopped an engine can leave a process of
   * the old one holding the engine's database, and the new service then waits on it forever;
   * its containers were unreachable anyway, and their records are in the store.
   */
  private async startOrRestart(space: EngineSpace, l: EngineLayout): Promise<void> {
    try {
      await this.start(space, l);
    } catch (err) {
      if (!isOcsError(err) || err.code !== 'unavailable') throw err;
      await this.kill(space);
      await this.start(space, l);
    }
  }

  private async start(space: EngineSpace, l: EngineLayout): Promise<void> {
    if (await ping(l.socket)) return;
    const { cgroups } = this.o;
    await cgroups.create(space.engineGroup);
    await cgroups.create(space.containersGroup);
    for (const dir of [l.dataDir, l.storage, l.varLib, l.varLibCni, l.networks, l.tmp, l.conf])
      await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(l.dataDir, 0o700);
    await writeFile(join(l.conf, 'containers.conf'), containersConf(l), { mode: 0o600 });
    const layers = await layerMounts(l.storage, this.o.fuseOverlayfs ?? 'auto');
    await writeFile(join(l.conf, 'storage.conf'), storageConf(l, layers), { mode: 0o600 });
    await writeFile(join(l.conf, 'registries.conf'), registriesConf(), { mode: 0o600 });
    for (const dir of [l.runDir, l.runRoot, l.libpodTmp, l.runcRoot, l.netns])
      await mkdir(dir, { recursive: true, mode: 0o700 });
    if (layers.mountProgram !== undefined) await noIdmappedLowerLayers(l.runRoot);

    const anchor = await this.anchor(space, l);
    await rm(l.socket, { force: true });
    const logFd = openSync(l.log, 'a', 0o600);
    try {
      await spawnInGroup(
        cgroups,
        space.engineGroup,
        'nsenter',
        [
          `--target=${anchor}`,
          '--mount',
          '--',
          this.podman,
          ...podmanGlobalArgs(l, layers),
          'system',
          'service',
          '--time',
          String(this.idleSeconds),
          `unix://${l.socket}`,
        ],
        engineEnv(l),
        logFd,
      );
    } finally {
      closeSync(logFd);
    }
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await ping(l.socket))) {
      if (Date.now() > deadline) {
        const e = new OcsError('unavailable', 'the space container engine did not start');
        // For the daemon's log only (the engine's own words can name the space's containers).
        e.cause = new Error((await readFile(l.log, 'utf8').catch(() => '')).slice(-2000));
        throw e;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * The pid of the process that holds the space's mount namespace, started (with the
   * namespace's binds) if none is alive. A recorded pid counts only if that process is still
   * in the space's engine group (pids are reused).
   */
  private async anchor(space: EngineSpace, l: EngineLayout): Promise<number> {
    const recorded = Number((await readFile(l.anchorPid, 'utf8').catch(() => '')).trim());
    if (Number.isSafeInteger(recorded) && recorded > 0) {
      const inGroup = await this.o.cgroups.processes(space.engineGroup).catch(() => [] as number[]);
      if (inGroup.includes(recorded)) return recorded;
    }
    // A new namespace: whatever ran in the old one is unreachable now and is ended, and the
    // network leases it held (CNI's state, in the space) are stale.
    await this.o.cgroups.destroy(space.containersGroup);
    await this.o.cgroups.create(space.containersGroup);
    await rm(l.varLibCni, { recursive: true, force: true });
    await mkdir(l.varLibCni, { recursive: true, mode: 0o700 });
    // Slave propagation: when the host unmounts another space's storage, the copy in here goes too.
    const pid = await spawnInGroup(
      this.o.cgroups,
      space.engineGroup,
      'unshare',
      ['--mount', '--propagation', 'slave', '--', 'sleep', 'infinity'],
      { PATH: '/usr/bin:/bin' },
      'ignore',
    );
    try {
      // unshare has exec'd sleep once /proc/<pid>/ns/mnt differs from ours.
      const ours = await readlinkSafe('/proc/self/ns/mnt');
      const deadline = Date.now() + 5000;
      while ((await readlinkSafe(`/proc/${pid}/ns/mnt`)) === ours) {
        if (Date.now() > deadline) throw new Error('the namespace anchor did not start');
        await new Promise((r) => setTimeout(r, 10));
      }
      // Shared inside (still a slave of the host): podman's mounts (layers, shm) then reach the
      // containers' own namespaces as slaves, so an unmount by podman reaches them too; private
      // copies would keep a removed container's shm busy in every other container.
      await run('nsenter', [`--target=${pid}`, '--mount', '--', 'mount', '--make-rshared', '/']);
      for (const b of namespaceBinds(l)) {
        // An empty directory on the host is the mount point; nothing is ever written into it.
        await mkdir(b.target, { recursive: true, mode: 0o755 });
        await run('nsenter', [`--target=${pid}`, '--mount', '--', 'mount', '--bind', b.source, b.target]);
      }
      // A /dev/shm of the engine's own. Rootful podman keeps every container's lock in one
      // segment there (libpod_lock, 2048 locks): shared by every space's engine, one space could
      // take them all from the others, and a store restored from another node would bring lock
      // numbers that another space's containers hold. Charged to the engine's group, and small.
      await run('nsenter', [
        `--target=${pid}`,
        '--mount',
        '--',
        'mount',
        '-t',
        'tmpfs',
        '-o',
        `size=${ENGINE_SHM_BYTES},mode=1777,nosuid,nodev,noexec`,
        'tmpfs',
        '/dev/shm',
      ]);
      await writeFile(l.anchorPid, `${pid}\n`, { mode: 0o600 });
      return pid;
    } catch (err) {
      process.kill(pid, 'SIGKILL');
      throw err;
    }
  }

  /**
   * Stops the space's containers (SIGTERM, then SIGKILL after the timeout), then everything in
   * its engine group (engine, conmon, the anchor: the namespace and its mounts go with it), and
   * removes the run directory. Returns the ids of the containers that were running, so the
   * caller can restore them. Safe to call when nothing runs.
   */
  async stop(space: EngineSpace): Promise<string[]> {
    const l = this.layout(space);
    let running: string[] = [];
    if (existsSync(l.runDir) && (await this.o.cgroups.processes(space.engineGroup).catch(() => [])).length > 0) {
      try {
        const d = await this.driver(space);
        const list = await d.list(space.spaceId);
        running = list.filter((c) => c.state === 'running').map((c) => c.containerId);
        await Promise.all(
          running.map((id) => d.stop(space.spaceId, id, this.o.stopTimeoutSeconds ?? 5).catch(() => undefined)),
        );
      } catch {
        // An engine that cannot answer is killed below with its containers.
      }
    }
    await this.kill(space);
    return running;
  }

  /** Kills everything of the space's engine and containers and removes its run directory. */
  async kill(space: Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'>): Promise<void> {
    this.drivers.delete(space.spaceId);
    // Containers first (their conmon would restart nothing, but would write exit files).
    await this.o.cgroups.destroy(space.containersGroup);
    await this.o.cgroups.destroy(space.engineGroup);
    await rm(this.runDirOf(space.spaceId), { recursive: true, force: true });
  }

  /**
   * For a space that is going away: everything {@link kill} does, and its network bridge
   * (CNI never deletes one). The engine's store goes with the space's storage.
   */
  async remove(space: Pick<EngineSpace, 'spaceId' | 'engineGroup' | 'containersGroup'>): Promise<void> {
    await this.kill(space);
    const bridge = bridgeName(space.spaceId);
    if (existsSync(`/sys/class/net/${bridge}`)) await run('ip', ['link', 'delete', bridge]);
  }

  /**
   * A store that came from another space (a restored archive), made this space's, before its
   * engine first serves it. podman's own database names the other space's paths, ids, network
   * and locks (and podman refuses a database whose paths moved), so it is dropped:
   * containers/storage keeps the images and the layers, and names no path. The images are given
   * this space's names, and each of the other space's containers is taken apart into its
   * writable layer and its log (kept beside the store) and removed; `transplant` puts them into
   * the container made anew from the space's records. Each step is skipped once done, so a crash
   * halfway is finished by running it again.
   */
  async adoptStore(
    space: EngineSpace,
    from: { spaceId: string; arrival: string },
    containerIds: readonly string[],
  ): Promise<void> {
    const fromSpaceId = from.spaceId;
    if (!isSpaceId(fromSpaceId)) throw new OcsError('invalid_request', 'not a space id');
    const l = this.layout(space);
    // Which arrival of a store this space last adopted: a second run for the same one skips
    // what is done. Not the space it came from: a space that moved away and back comes from
    // itself both times, with another node's database the second time.
    const mark = join(l.dataDir, 'adopted.json');
    const done = await readFile(mark, 'utf8')
      .then((t) => (JSON.parse(t) as { arrival?: string }).arrival === from.arrival)
      .catch(() => false);
    if (!done) {
      await this.kill(space);
      await rm(join(l.storage, 'libpod', 'bolt_state.db'), { force: true });
      await rm(join(l.storage, 'volumes'), { recursive: true, force: true });
      // The other space's network definition and CNI leases: this space's are written anew.
      for (const dir of [l.networks, l.varLibCni]) await rm(dir, { recursive: true, force: true });
      await writeFile(mark, JSON.stringify({ from: fromSpaceId, arrival: from.arrival }), { mode: 0o600 });
    }
    const storage = l.storage;
    const images = await readStoreJson<{ id: string; names?: string[] }>(
      join(storage, 'overlay-images', 'images.json'),
    );
    for (const img of images) {
      // A space that moved keeps its id: its images' names are its own already.
      if (fromSpaceId === space.spaceId) break;
      for (const name of img.names ?? []) {
        const ref = parseImageRef(name);
        if (ref?.spaceId !== fromSpaceId) continue;
        await this.podmanCli(space, ['tag', img.id, imageRef(space.spaceId, ref.name)]);
        await this.podmanCli(space, ['untag', img.id, name]);
      }
    }
    const stored = await readStoreJson<{ id: string; names?: string[]; layer: string }>(
      join(storage, 'overlay-containers', 'containers.json'),
    );
    for (const containerId of containerIds) {
      const name = containerName(fromSpaceId, containerId);
      const c = stored.find((x) => x.names?.includes(name));
      if (!c) continue;
      const held = this.heldOf(space, containerId);
      await mkdir(held, { recursive: true, mode: 0o700 });
      // Renamed, not copied: the layer stays on the space's filesystem, costing nothing.
      const diff = join(storage, 'overlay', c.layer, 'diff');
      if (existsSync(diff) && !existsSync(join(held, 'diff'))) await rename(diff, join(held, 'diff'));
      const log = join(storage, 'overlay-containers', c.id, 'userdata', 'ctr.log');
      if (existsSync(log) && !existsSync(join(held, 'ctr.log'))) await copyFile(log, join(held, 'ctr.log'));
      await this.podmanCli(space, ['rm', '--force', c.id]);
    }
  }

  /**
   * Puts a container's writable layer and log, kept by `adoptStore` under its old id, into
   * `containerId`, just made anew (not started) from the same record. A container with nothing
   * kept is left as it is.
   */
  async transplant(space: EngineSpace, fromContainerId: string, containerId: string): Promise<void> {
    const held = this.heldOf(space, fromContainerId);
    if (!existsSync(held)) return;
    const out = await this.podmanCli(space, [
      'container',
      'inspect',
      '--format',
      '{{.GraphDriver.Data.UpperDir}}\t{{.HostConfig.LogConfig.Path}}',
      containerName(space.spaceId, containerId),
    ]);
    const [upper, logPath] = out.trim().split('\t');
    if (!upper || !logPath) throw new Error(`podman named no writable layer or log for ${containerId}`);
    if (existsSync(join(held, 'diff'))) {
      await rm(upper, { recursive: true, force: true });
      await rename(join(held, 'diff'), upper);
    }
    if (existsSync(join(held, 'ctr.log'))) await copyFile(join(held, 'ctr.log'), logPath);
    await rm(held, { recursive: true, force: true });
  }

  /** Where a container's writable layer and log wait between `adoptStore` and `transplant`. */
  private heldOf(space: EngineSpace, containerId: string): string {
    if (!/^ctr_[a-z0-9]{1,40}$/.test(containerId)) throw new OcsError('invalid_request', 'not a container id');
    return join(this.layout(space).dataDir, 'adopting', containerId);
  }

  /** One podman command in the space's engine namespace (the engine started first), as the engine runs it. */
  private async podmanCli(space: EngineSpace, args: string[]): Promise<string> {
    await this.ensure(space);
    const l = this.layout(space);
    const anchor = await this.anchor(space, l);
    const layers = await layerMounts(l.storage, this.o.fuseOverlayfs ?? 'auto');
    const { stdout } = await run(
      'nsenter',
      [`--target=${anchor}`, '--mount', '--', this.podman, ...podmanGlobalArgs(l, layers), ...args],
      { env: engineEnv(l), timeoutMs: 120_000 },
    );
    return stdout;
  }

  /** Space ids that have a run directory here (an engine that may still run). */
  async spacesWithRunDirs(): Promise<string[]> {
    const names = await readdir(this.o.runRoot).catch(() => [] as string[]);
    return names.filter(isSpaceId).sort();
  }
}

/**
 * Starts `cmd` detached in `group`: a shell waits for one line before exec'ing it, so the
 * process is in the group before it runs anything (nothing is ever charged elsewhere). The
 * engine gets umask 022, not the daemon's 0077: what it creates for a container (its cgroups,
 * its run files) must be traversable by the container's root, an unprivileged id on the host.
 */
async function spawnInGroup(
  cgroups: CgroupDriver,
  group: string,
  cmd: string,
  args: string[],
  env: Record<string, string>,
  out: number | 'ignore',
): Promise<number> {
  const child = spawn('/bin/sh', ['-c', 'umask 022 && read -r _ && exec "$@"', 'ocs-engine', cmd, ...args], {
    detached: true,
    stdio: ['pipe', out, out],
    env,
    cwd: '/',
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${cmd} could not be started`);
  try {
    await cgroups.addProcess(group, pid);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  child.stdin!.end('go\n');
  child.unref();
  return pid;
}

async function readlinkSafe(path: string): Promise<string> {
  return readlink(path).catch(() => '');
}

/** ZFS's f_type (statfs(2)): zfs_vfsops.c, ZFS_SUPER_MAGIC. */
const ZFS_SUPER_MAGIC = 0x2fc12fc1;

/** How the engine mounts layers on the file system that holds its store (see {@link FUSE_OVERLAYFS}). */
async function layerMounts(storage: string, mode: 'auto' | 'always'): Promise<{ mountProgram?: string }> {
  if (mode === 'auto' && (await statfs(storage)).type !== ZFS_SUPER_MAGIC) return {};
  if (!existsSync(FUSE_OVERLAYFS))
    throw new OcsError('unavailable', 'containers on ZFS need fuse-overlayfs, which this node does not have');
  return { mountProgram: FUSE_OVERLAYFS };
}

/**
 * With a mount program, containers/storage before 1.46 (bookworm's podman 4.3 has 1.43) shifts
 * a user namespace's ids twice: it mounts the lower layers idmapped (where the kernel can) and also
 * tells fuse-overlayfs the mapping, so the container's root sees its whole root filesystem as
 * the overflow id and cannot even create /etc/hosts there ("OCI permission denied"). It asks
 * the kernel only once per run root and caches the answer as a file there; recording "no"
 * before the engine first starts leaves the shifting to fuse-overlayfs alone, which is what
 * 1.46 does itself (it skips idmapped lower layers under a mount program). If the file's name
 * changes, the engine asks the kernel again and the fuse-overlayfs test in engines.host.test.ts fails.
 */
async function noIdmappedLowerLayers(runRoot: string): Promise<void> {
  await mkdir(join(runRoot, 'overlay'), { recursive: true, mode: 0o700 });
  await rm(join(runRoot, 'overlay', 'idmapped-lower-dir-true'), { force: true });
  await writeFile(join(runRoot, 'overlay', 'idmapped-lower-dir-false'), '', { mode: 0o600 });
}

/** One of containers/storage's JSON lists (images, containers); none yet is an empty list. */
async function readStoreJson<T>(path: string): Promise<T[]> {
  const text = await readFile(path, 'utf8').catch(() => '[]');
  const v = JSON.parse(text) as unknown;
  return Array.isArray(v) ? (v as T[]) : [];
}

/** GET /_ping on a unix socket: true on 200 within a second. */
export function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    if (!existsSync(socketPath)) return resolve(false);
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
