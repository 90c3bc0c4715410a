/**
 * A minimal image for tests, made without any registry: Debian's static busybox and its applet
 * links, imported into the host's dockerd (`docker import`) and exported again as a
 * `docker save` tarball, the form an owner uploads. dockerd builds test images (and bench
 * baselines) only: spaces' containers run in their own podman engines.
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execFileSync } from 'node:child_process';
import Dockerode from 'dockerode';
import { DOCKER_API_VERSION } from '#src/podman/driver.js';
import { progressError, readProgress } from '#src/podman/streams.js';
import { tarEnd, ustarFile, ustarHeader } from '#src/podman/tar.js';

/** The host's dockerd, which builds the test image. */
export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** Debian's `busybox-static`. */
export const BUSYBOX_PATH = '/bin/busybox';

export interface BusyboxImageOptions {
  /** Dockerfile instructions applied on import (`LABEL`, `VOLUME`, `ENV`, `CMD`, …). */
  changes?: string[];
  socketPath?: string;
  busyboxPath?: string;
}

/**
 * A rootfs tar: `/bin/busybox`, a link to it for every applet it reports, `/tmp` (1777), the
 * mount points runc expects, and a tiny `/etc/passwd` and `/etc/group` so `id` and `whoami` work.
 */
export async function busyboxRootfsTar(busyboxPath = BUSYBOX_PATH): Promise<Buffer> {
  const busybox = await readFile(busyboxPath);
  const applets = execFileSync(busyboxPath, ['--list'], { encoding: 'utf8' })
    .split('\n')
    .map((a) => a.trim())
    .filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== 'busybox');
  const dir = (name: string, mode = 0o755) => ustarHeader({ name: `${name}/`, type: '5', mode });
  const parts: Buffer[] = [
    ...['bin', 'etc', 'dev', 'proc', 'sys', 'root', 'var'].map((d) => dir(d)),
    dir('tmp', 0o1777),
    ustarFile('bin/busybox', busybox, 0o755),
    ...applets.map((a) => ustarHeader({ name: `bin/${a}`, type: '2', linkname: 'busybox', mode: 0o777 })),
    ustarFile('etc/passwd', Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n')),
    ustarFile('etc/group', Buffer.from('root:x:0:\nnogroup:x:65534:\n')),
    tarEnd(),
  ];
  return Buffer.concat(parts);
}

/**
 * Imports the busybox rootfs into dockerd under the global `tag` (`docker import`); returns the
 * image id. The caller removes `tag`.
 */
export async function importBusyboxImage(tag: string, opts: BusyboxImageOptions = {}): Promise<string> {
  const docker = client(opts);
  const [repo, version = 'latest'] = splitTag(tag);
  const rootfs = await busyboxRootfsTar(opts.busyboxPath);
  const importOpts: Record<string, unknown> = { repo, tag: version };
  if (opts.changes && opts.changes.length > 0) importOpts.changes = opts.changes;
  const progress = await readProgress(await docker.importImage(Readable.from([rootfs]), importOpts));
  const failure = progressError(progress);
  if (failure !== undefined) throw new Error(`docker import failed: ${failure}`);
  return (await docker.getImage(tag).inspect()).Id;
}

/**
 * Builds the busybox image under the global `tag`, saves it as a `docker save` tarball in a
 * fresh temporary directory, removes `tag` again, and returns the tarball's path (the caller
 * removes its directory). The saved manifest still names `tag`: exactly what an owner's
 * tarball looks like, and what `loadImage` must not apply.
 */
export async function buildBusyboxImage(tag: string, opts: BusyboxImageOptions = {}): Promise<string> {
  const docker = client(opts);
  await importBusyboxImage(tag, opts);
  try {
    const dir = await mkdtemp(join(tmpdir(), 'ocs-busybox-'));
    const file = join(dir, 'busybox.tar');
    await pipeline(await docker.getImage(tag).get(), createWriteStream(file, { mode: 0o600 }));
    return file;
  } finally {
    // Untags; the image itself goes too unless something else still names or uses it.
    await docker
      .getImage(tag)
      .remove({ force: false, noprune: false })
      .catch(() => undefined);
  }
}

function client(opts: BusyboxImageOptions): Dockerode {
  return new Dockerode({ socketPath: opts.socketPath ?? DEFAULT_DOCKER_SOCKET, version: DOCKER_API_VERSION });
}

/** `repo[:tag]`, where a `:` before the last `/` belongs to a registry host. */
function splitTag(ref: string): [string, string | undefined] {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, undefined];
}
