/**
 * A space's containers. Every operation first finds the container by both labels (space and
 * container id) and then acts on its immutable Docker id, so a container of another space is
 * `not_found` and never touched, even if a name or id were guessed.
 */
import { OcsError } from '@ocs/protocol';
import { call, libpod, type DriverContext } from './context.js';
import { statusOf, toOcsError } from './errors.js';
import {
  buildLibpodSpec,
  checkCgroupParentExists,
  checkMountSource,
  uncoveredImageVolumes,
  validateSpec,
} from './hardening.js';
import { inspectSpaceImage } from './images.js';
import {
  LABEL_CONTAINER,
  LABEL_NAME,
  LABEL_SPACE,
  checkContainerId,
  checkSpaceId,
  containerName,
  isContainerId,
  networkName,
} from './names.js';
import { ensureNetwork } from './network.js';
import { demuxLogs, tailText } from './streams.js';
import { kernelOomKilled } from './kernel-oom.js';
import type { ContainerLogs, ContainerSpec, ContainerStatsSample, ContainerStatus, ContainerSummary } from './types.js';

const NEVER = '0001-01-01T00:00:00Z';

/** podman's compatible API passes some libpod states through; they are Docker's under other names. */
function dockerState(state: string): string {
  switch (state) {
    case 'stopped':
      return 'exited';
    case 'configured':
    case 'initialized':
      return 'created';
    case 'stopping':
      return 'running';
    default:
      return state;
  }
}

/** The Docker id of the space's container, or `not_found`. */
export async function findContainer(ctx: DriverContext, spaceId: string, containerId: string): Promise<string> {
  checkSpaceId(spaceId);
  checkContainerId(containerId);
  const found = await call('list containers', () =>
    ctx.docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_SPACE}=${spaceId}`, `${LABEL_CONTAINER}=${containerId}`] },
    }),
  );
  const name = `/${containerName(spaceId, containerId)}`;
  const match = found.find((c) => c.Names.includes(name));
  if (!match) throw new OcsError('not_found', 'no such container in this space');
  return match.Id;
}

export async function createContainer(ctx: DriverContext, spec: ContainerSpec): Promise<{ dockerId: string }> {
  const { capAdd } = validateSpec(spec);
  await Promise.all(spec.mounts.map((m, i) => checkMountSource(m.source, `mounts[${i}].source`)));
  await checkCgroupParentExists(ctx.cgroupRoot, spec.cgroupParent);
  const image = await inspectSpaceImage(ctx, spec.spaceId, spec.image);
  // The owner's input, not the engine's failure: an image that says nothing to run (one made by
  // `docker import` has no CMD) needs the container's command.
  if (!spec.command?.length && !image.Config?.Cmd?.length && !image.Config?.Entrypoint?.length)
    throw new OcsError('invalid_request', 'the image has no CMD or ENTRYPOINT: give the container a command', {
      field: 'command',
    });
  const uncovered = uncoveredImageVolumes(image.Config?.Volumes, spec.mounts);
  if (uncovered.length > 0) {
    throw new OcsError('invalid_request', `the image declares volumes that need a mount: ${uncovered.join(', ')}`, {
      field: 'mounts',
      volumes: uncovered,
    });
  }
  await ensureNetwork(ctx, spec.spaceId);
  // podman's own API: its Docker-compatible create cannot set the space's id map.
  const body = buildLibpodSpec(spec, capAdd, image.Id, networkName(spec.spaceId), ctx.podman.idMap);
  const created = await call(
    'create the container',
    () => libpod<{ Id: string }>(ctx, 'POST', '/containers/create', body),
    { reason: true },
  );
  return { dockerId: created.Id };
}

/**
 * Starts the container after checking its bind sources again: runc resolves them at every
 * start, so a volume directory swapped for a symlink since create must not be followed.
 */
export async function startContainer(ctx: DriverContext, spaceId: string, containerId: string): Promise<void> {
  const id = await findContainer(ctx, spaceId, containerId);
  const c = ctx.docker.getContainer(id);
  const info = await call('inspect the container', () => c.inspect());
  // The top-level list: podman's Docker API leaves HostConfig.Mounts empty (it reports Binds).
  for (const m of info.Mounts ?? []) {
    if (m.Type !== 'bind') throw new OcsError('invalid_request', 'the container has a mount that is not a bind mount');
    await checkMountSource(m.Source, 'mounts.source');
  }
  if (info.HostConfig.CgroupParent) await checkCgroupParentExists(ctx.cgroupRoot, info.HostConfig.CgroupParent);
  try {
    await c.start();
  } catch (err) {
    if (statusOf(err) !== 304) throw toOcsError(err, 'start the container', { reason: true }); // 304: already running
  }
}

export async function stopContainer(
  ctx: DriverContext,
  spaceId: string,
  containerId: string,
  timeoutSeconds = 10,
): Promise<void> {
  if (!Number.isSafeInteger(timeoutSeconds) || timeoutSeconds < 0 || timeoutSeconds > 600) {
    throw new OcsError('invalid_request', 'timeoutSeconds must be an integer from 0 to 600', {
      field: 'timeoutSeconds',
    });
  }
  const id = await findContainer(ctx, spaceId, containerId);
  try {
    await ctx.docker.getContainer(id).stop({ t: timeoutSeconds });
  } catch (err) {
    if (statusOf(err) !== 304) throw toOcsError(err, 'stop the container'); // 304: not running
  }
}

export async function removeContainer(ctx: DriverContext, spaceId: string, containerId: string): Promise<void> {
  const id = await findContainer(ctx, spaceId, containerId);
  await removeById(ctx, id);
}

/** Kills and removes, with anonymous volumes; gone already is fine. */
export async function removeById(ctx: DriverContext, dockerId: string): Promise<void> {
  try {
    await ctx.docker.getContainer(dockerId).remove({ force: true, v: true });
  } catch (err) {
    if (statusOf(err) !== 404) throw toOcsError(err, 'remove the container');
  }
}

export async function inspectContainer(
  ctx: DriverContext,
  spaceId: string,
  containerId: string,
): Promise<ContainerStatus> {
  const id = await findContainer(ctx, spaceId, containerId);
  const info = await call('inspect the container', () => ctx.docker.getContainer(id).inspect());
  const s = info.State;
  const ran = s.StartedAt !== undefined && s.StartedAt !== NEVER;
  return {
    state: dockerState(s.Status),
    ...(ran && !s.Running && !s.Restarting ? { exitCode: s.ExitCode } : {}),
    // podman does not see OOM kills on this kernel's hybrid cgroup v1 (see kernel-oom.ts).
    oomKilled: s.OOMKilled === true || (s.ExitCode === 137 && kernelOomKilled(info.Id)),
    ...(ran ? { startedAt: s.StartedAt } : {}),
  };
}

export async function listContainers(ctx: DriverContext, spaceId: string): Promise<ContainerSummary[]> {
  checkSpaceId(spaceId);
  const found = await call('list containers', () =>
    ctx.docker.listContainers({ all: true, filters: { label: [`${LABEL_SPACE}=${spaceId}`] } }),
  );
  const out: ContainerSummary[] = [];
  for (const c of found) {
    const containerId = c.Labels[LABEL_CONTAINER];
    if (!isContainerId(containerId) || !c.Names.includes(`/${containerName(spaceId, containerId)}`)) continue;
    out.push({ containerId, name: c.Labels[LABEL_NAME] ?? '', state: dockerState(c.State) });
  }
  return out.sort((a, b) => a.containerId.localeCompare(b.containerId));
}

/**
 * The last `tailLines` lines of stdout and stderr. One line more is asked of the engine to learn
 * whether older lines exist; the text is capped at {@link MAX_LOG_BYTES} as well.
 */
export async function containerLogs(
  ctx: DriverContext,
  spaceId: string,
  containerId: string,
  opts: { tailLines: number },
): Promise<ContainerLogs> {
  const tailLines = opts?.tailLines;
  if (typeof tailLines !== 'number' || !Number.isSafeInteger(tailLines) || tailLines < 1 || tailLines > 100_000) {
    throw new OcsError('invalid_request', 'tailLines must be an integer from 1 to 100000', { field: 'tailLines' });
  }
  const id = await findContainer(ctx, spaceId, containerId);
  const raw: unknown = await call('read the logs', () =>
    ctx.docker
      .getContainer(id)
      .logs({ stdout: true, stderr: true, follow: false, timestamps: false, tail: tailLines + 1 }),
  );
  // dockerode hands back the body as a Buffer, unless it happened to parse as JSON.
  const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(typeof raw === 'string' ? raw : JSON.stringify(raw ?? ''));
  return tailText(demuxLogs(buf).toString('utf8'), tailLines);
}

export async function containerStats(
  ctx: DriverContext,
  spaceId: string,
  containerId: string,
): Promise<ContainerStatsSample> {
  const id = await findContainer(ctx, spaceId, containerId);
  // one-shot: no second sample a second later (we do not compute a CPU percentage).
  const s = await call('read the stats', () => ctx.docker.getContainer(id).stats({ stream: false, 'one-shot': true }));
  const mem = s.memory_stats ?? {};
  const inner = (mem.stats ?? {}) as Record<string, number | undefined>;
  // Like `docker stats`: page cache the kernel can drop does not count (v1: total_inactive_file, v2: inactive_file).
  const inactive = inner.total_inactive_file ?? inner.inactive_file ?? 0;
  const usage = mem.usage ?? 0;
  return {
    memoryBytes: Math.max(0, usage - (inactive < usage ? inactive : 0)),
    memoryLimitBytes: mem.limit ?? 0,
    cpuNanos: s.cpu_stats?.cpu_usage?.total_usage ?? 0,
    pids: s.pids_stats?.current ?? 0,
  };
}
