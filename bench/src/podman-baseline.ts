/**
 * The chosen engine run by hand: podman's own CLI on a store of this run's own (root under
 * /var/lib, runroot under /run), with the hardening and the id map a space's containers get.
 * The benchmarks measure our path against it; `cleanup()` removes only this store's containers,
 * images and mounts.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** What `docker run` is asked for our containers' hardening (podman takes the same flags). */
export const DOCKER_HARDENED = [
  '--init',
  '--cap-drop',
  'ALL',
  '--security-opt',
  'no-new-privileges',
  '--ipc',
  'private',
  '--cgroupns',
  'private',
];

const PODMAN_HARDENED = [
  ...DOCKER_HARDENED,
  '--ulimit',
  'nofile=1024:1024',
  '--ulimit',
  'nproc=4096:4096',
  '--uidmap',
  '0:1980000000:65536',
  '--gidmap',
  '0:1980000000:65536',
  '--network',
  'none',
];

export interface PodmanBaseline {
  /** Runs `podman <global flags> ...args`; returns its trimmed stdout. */
  pod(args: string[]): string;
  /** `podman run` flags: our containers' hardening and id map, no network, this run's cgroup parent. */
  runFlags: string[];
  /** That cgroup parent, relative to the hierarchies' roots. */
  cgroupParent: string;
  /** `podman rm -f -t 0 <id>`, tried again when it fails (see below). */
  remove(id: string): void;
  /** Stops this store's containers. */
  stop(): void;
  /** Stops and removes this store's containers and images, its mounts, files and cgroups. */
  cleanup(): void;
}

export function podmanBaseline(tag: string | number = process.pid): PodmanBaseline {
  const dir = `/var/lib/ocs-bench-podman-${tag}`;
  // podman limits the runroot's length: keep it short.
  const runRoot = `/run/ocs-bp${tag}`;
  const global = [
    '--root',
    `${dir}/root`,
    '--runroot',
    runRoot,
    '--tmpdir',
    `${runRoot}/libpod`,
    '--cgroup-manager',
    'cgroupfs',
    '--runtime',
    'runc',
    '--events-backend',
    'none',
  ];
  // A cgroup parent of this run's own, removed at cleanup (podman's default, libpod_parent, stays).
  const cgroupParent = `ocs-bench-podman-${tag}`;
  const pod = (args: string[]) =>
    execFileSync('podman', [...global, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  // On this kernel about one `rm -f` in three fails with EBUSY on the container's shm mount
  // point (the dying container's namespace still holds it); the next attempt succeeds.
  const remove = (id: string) => {
    for (let i = 0; ; i++) {
      try {
        pod(['rm', '-f', '-t', '0', id]);
        return;
      } catch (err) {
        if (i >= 4) throw err;
        execFileSync('sleep', ['0.1']);
      }
    }
  };
  const stop = () =>
    quietly('stop the baseline containers', () =>
      execFileSync('podman', [...global, 'stop', '-a', '-t', '0'], { stdio: 'ignore' }),
    );
  return {
    pod,
    remove,
    runFlags: [...PODMAN_HARDENED, '--cgroup-parent', `/${cgroupParent}`],
    cgroupParent,
    stop,
    cleanup() {
      // Stopped before any is removed: a running container's mount namespace holds a copy of
      // every other container's mounts, this store's or another's (the host's / is private
      // here), and an rm would fail busy. With several stores, stop() them all first.
      stop();
      quietly('remove the baseline containers', () => {
        for (const id of pod(['ps', '-a', '-q', '--no-trunc']).split('\n').filter(Boolean)) remove(id);
      });
      quietly('remove the baseline images', () =>
        execFileSync('podman', [...global, 'rmi', '-a', '-f'], { stdio: 'ignore' }),
      );
      // podman leaves its overlay and shm mounts of this store: unmount exactly those.
      for (const m of mountsUnder([dir, runRoot]))
        quietly(`unmount ${m}`, () => execFileSync('umount', ['-l', m], { stdio: 'ignore' }));
      quietly(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
      quietly(`remove ${runRoot}`, () => rmSync(runRoot, { recursive: true, force: true }));
      for (const h of existsSync('/sys/fs/cgroup/memory') ? readdirSync('/sys/fs/cgroup') : ['']) {
        const top = join('/sys/fs/cgroup', h, cgroupParent);
        if (existsSync(top)) removeTree(top);
      }
    },
  };
}

/** Mount points at or below any of `tops`, deepest first. */
function mountsUnder(tops: string[]): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => tops.some((t) => m === t || m.startsWith(`${t}/`)))
    .sort()
    .reverse();
}

function removeTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  quietly(`remove cgroup ${dir}`, () => rmdirSync(dir));
}

function quietly(what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    console.error(`could not ${what}: ${String(err)}`);
  }
}
