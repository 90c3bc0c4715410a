/**
 * Inside a space: volumes, images, files, containers and VMs, through the space's own API
 * (every request signed by your key). Never an exec or a shell: logs, stats and the serial
 * console are read-only.
 */
import { basename } from 'node:path';
import { statSync } from 'node:fs';
import type { Command } from 'commander';
import type { Container } from '@ocs/protocol';
import { UsageError, formatBytes, parseCpu, parseSize } from '../units.js';
import { busy, keyValues, print, progressBar, table } from '../output.js';
import type { Run } from '../main.js';
import { attach, op, removed, type Row } from './one-to-one.js';
import { inSpace, spaced } from './space-handle.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

function showContainer(c: Container): string {
  return keyValues([
    ['container', c.name],
    ['id', c.id],
    ['image', c.image],
    [
      'state',
      `${c.state}${c.exitCode !== undefined ? ` (exit ${c.exitCode})` : ''}${c.oomKilled ? ', OOM-killed' : ''}`,
    ],
    ['cpu', (c.cpuMillicores / 1000).toFixed(2)],
    ['memory', formatBytes(c.memoryBytes)],
    ['pids', c.pids],
    ['created', c.createdAt],
  ]);
}

/** Sends a file under a progress bar, which ends whether or not the sending succeeds. */
async function withProgress<T>(
  label: string,
  file: string,
  send: (onProgress: (sent: number, total: number) => void) => Promise<T>,
): Promise<T> {
  try {
    if (!statSync(file).isFile()) throw new Error();
  } catch {
    throw new UsageError(`${file} is not a readable file`);
  }
  const bar = progressBar(`${label} ${basename(file)}`);
  try {
    return await send(bar.update);
  } finally {
    bar.done();
  }
}

export function workloadCommands(program: Command, run: Run): void {
  const volume = program.command('volume').description("volumes: encrypted directories in the space's storage");
  attach(volume, run, [
    (group) =>
      spaced(group.command('create <name>').requiredOption('--size <size>', 'e.g. 1GiB'))
        .description('make a volume')
        .action(
          run(async (ctx, name: string, o: { size: string; space?: string }) => {
            const v = await inSpace(ctx, o.space).volumes.create({ name, sizeBytes: parseSize(o.size) });
            print(ctx.out, v, () => `${v.name}: ${formatBytes(v.sizeBytes)}`);
          }),
        ),
    op({
      usage: 'ls',
      description: 'the volumes',
      op: 'listVolumes',
      human: (r) =>
        table(
          ['NAME', 'SIZE', 'CREATED'],
          r.volumes.map((v) => [v.name, formatBytes(v.sizeBytes), v.createdAt]),
        ),
    }),
    op({
      usage: 'rm <name>',
      description: 'destroy a volume and its data',
      op: 'deleteVolume',
      param: 'volume',
      ...removed,
    }),
  ]);

  const image = program.command('image').description('images: docker save tarballs loaded into the space');
  attach(image, run, [
    (group) =>
      spaced(
        group.command('load <file>').option('--name <name>', 'its name in the space (default: from the file name)'),
      )
        .description('load a `docker save` / `podman save` tarball (streamed, with progress)')
        .action(
          run(async (ctx, file: string, o: { name?: string; space?: string }) => {
            const name =
              o.name ??
              basename(file)
                .replace(/\.tar$/, '')
                .toLowerCase();
            if (!NAME_RE.test(name))
              throw new UsageError(`${JSON.stringify(name)} is not a valid image name: pass --name`);
            const img = await withProgress('loading', file, (onProgress) =>
              inSpace(ctx, o.space).images.load(name, { path: file }, { onProgress }),
            );
            print(ctx.out, img, () => `${img.name}: loaded (${formatBytes(img.sizeBytes)})`);
          }),
        ),
    op({
      usage: 'ls',
      description: 'the images',
      op: 'listImages',
      human: (r) =>
        table(
          ['NAME', 'SIZE', 'LOADED'],
          r.images.map((i) => [i.name, formatBytes(i.sizeBytes), i.loadedAt]),
        ),
    }),
    op({ usage: 'rm <name>', description: 'remove an image', op: 'deleteImage', param: 'image', ...removed }),
  ]);

  // Files (kernels, disk images).
  const file = program.command('file').description("files: kernels, initramfs and disk images in the space's storage");
  attach(file, run, [
    (group) =>
      spaced(group.command('upload <path>').option('--name <name>', 'its name in the space (default: the file name)'))
        .description('upload a file (streamed, with progress)')
        .action(
          run(async (ctx, path: string, o: { name?: string; space?: string }) => {
            const name = o.name ?? basename(path).toLowerCase();
            if (!NAME_RE.test(name))
              throw new UsageError(`${JSON.stringify(name)} is not a valid file name: pass --name`);
            const f = await withProgress('uploading', path, (onProgress) =>
              inSpace(ctx, o.space).files.upload(name, { path }, { onProgress }),
            );
            print(ctx.out, f, () => `${f.name}: ${formatBytes(f.sizeBytes)}, sha256 ${f.sha256}`);
          }),
        ),
    op({
      usage: 'ls',
      description: 'the files',
      op: 'listFiles',
      human: (r) =>
        table(
          ['NAME', 'SIZE', 'SHA256'],
          r.files.map((f) => [f.name, formatBytes(f.sizeBytes), f.sha256]),
        ),
    }),
    op({ usage: 'rm <name>', description: 'delete a file', op: 'deleteFile', param: 'file', ...removed }),
  ]);

  // Containers.
  const collect = (v: string, prev: string[]) => [...prev, v];
  spaced(
    program
      .command('run <image> [command...]')
      .description('create and start a hardened container')
      .requiredOption('--name <name>', 'the container name')
      .option('--cpu <n>', 'CPUs: 1, 0.5 or 250m', '0.5')
      .option('--memory <size>', 'memory, e.g. 256MiB', '256MiB')
      .option('--pids <n>', 'processes at most')
      .option('-e, --env <KEY=VALUE>', 'environment (repeatable)', collect, [])
      .option('-v, --volume <name:/path[:ro]>', 'mount a volume (repeatable)', collect, []),
  ).action(
    run(
      async (
        ctx,
        img: string,
        command: string[],
        o: {
          name: string;
          cpu: string;
          memory: string;
          pids?: string;
          env: string[];
          volume: string[];
          space?: string;
        },
      ) => {
        const env: Record<string, string> = {};
        for (const e of o.env) {
          const i = e.indexOf('=');
          if (i < 1) throw new UsageError(`--env ${JSON.stringify(e)} is not KEY=VALUE`);
          env[e.slice(0, i)] = e.slice(i + 1);
        }
        const mounts = o.volume.map((v) => {
          const [volumeName, target, mode] = v.split(':');
          if (!volumeName || !target || (mode !== undefined && mode !== 'ro'))
            throw new UsageError(`--volume ${JSON.stringify(v)} is not NAME:/path or NAME:/path:ro`);
          return { volume: volumeName, target, ...(mode === 'ro' ? { readOnly: true } : {}) };
        });
        const c = await busy(
          'starting',
          inSpace(ctx, o.space).containers.create({
            name: o.name,
            image: img,
            ...(command.length ? { command } : {}),
            ...(Object.keys(env).length ? { env } : {}),
            ...(mounts.length ? { mounts } : {}),
            cpuMillicores: parseCpu(o.cpu),
            memoryBytes: parseSize(o.memory, 'memory'),
            ...(o.pids ? { pids: Number(o.pids) } : {}),
          }),
        );
        print(ctx.out, c, () => `${c.name}: ${c.state}`);
      },
    ),
  );
  const container = program.command('container').description('containers: inspect, logs, stats, stop, start, remove');
  const stateOf = (c: { name: string; state: string }) => `${c.name}: ${c.state}`;
  attach(container, run, [
    op({
      usage: 'ls',
      description: 'the containers',
      op: 'listContainers',
      human: (r) =>
        table(
          ['NAME', 'IMAGE', 'STATE', 'CPU', 'MEMORY', 'CREATED'],
          r.containers.map((c) => [
            c.name,
            c.image,
            c.state + (c.exitCode !== undefined && c.state === 'exited' ? ` (${c.exitCode})` : ''),
            (c.cpuMillicores / 1000).toFixed(2),
            formatBytes(c.memoryBytes),
            c.createdAt,
          ]),
        ),
    }),
    op({
      usage: 'show <name>',
      description: 'one container',
      op: 'getContainer',
      param: 'container',
      human: showContainer,
    }),
    tailed({
      usage: 'logs <name>',
      tail: ['--tail <n>', 'lines from the end', '200'],
      follow: 'keep printing new lines until the container stops (Ctrl-C ends)',
      description: 'stdout and stderr of a container',
      read: (s, name, tail) => s.containers.logs(name, { tail }),
      followTail: 10_000,
      running: async (s, name) => (await s.containers.get(name)).state === 'running',
    }),
    op({
      usage: 'stats <name>',
      description: 'memory, CPU and processes of a running container',
      op: 'containerStats',
      param: 'container',
      human: (st) =>
        keyValues([
          ['memory', `${formatBytes(st.memoryBytes)} of ${formatBytes(st.memoryLimitBytes)}`],
          ['cpu time', `${(st.cpuNanos / 1e9).toFixed(2)} s`],
          ['pids', st.pids],
        ]),
    }),
    op({
      usage: 'stop <name>',
      description: 'stop a container',
      op: 'stopContainer',
      param: 'container',
      human: stateOf,
    }),
    op({
      usage: 'start <name>',
      description: 'start a stopped container',
      op: 'startContainer',
      param: 'container',
      human: stateOf,
    }),
    op({
      usage: 'rm <name>',
      description: 'remove a container (stopping it first)',
      op: 'deleteContainer',
      param: 'container',
      ...removed,
    }),
  ]);

  // VMs.
  const vm = program.command('vm').description('VMs (libvirt/QEMU) booted from uploaded files');
  attach(vm, run, [
    (group) =>
      spaced(
        group
          .command('create <name>')
          .option('--vcpus <n>', 'virtual CPUs', '1')
          .option('--memory <size>', 'memory', '256MiB')
          .option('--kernel <file>', 'boot this uploaded kernel')
          .option('--initrd <file>', 'with this uploaded initramfs')
          .option('--cmdline <text>', 'kernel command line')
          .option('--disk <file>', 'boot this uploaded disk image instead')
          .option('--disk-size <size>', 'a writable disk of this size')
          .option('--no-start', 'define it only'),
      )
        .description('define and start a VM')
        .action(
          run(
            async (
              ctx,
              name: string,
              o: {
                vcpus: string;
                memory: string;
                kernel?: string;
                initrd?: string;
                cmdline?: string;
                disk?: string;
                diskSize?: string;
                start: boolean;
                space?: string;
              },
            ) => {
              if (!o.kernel === !o.disk) throw new UsageError('boot from --kernel FILE or --disk FILE (one of them)');
              const v = await inSpace(ctx, o.space).vms.create({
                name,
                vcpus: Number(o.vcpus),
                memoryBytes: parseSize(o.memory, 'memory'),
                boot: o.kernel
                  ? {
                      kind: 'kernel',
                      kernel: o.kernel,
                      ...(o.initrd ? { initrd: o.initrd } : {}),
                      ...(o.cmdline ? { cmdline: o.cmdline } : {}),
                    }
                  : { kind: 'disk', disk: o.disk! },
                ...(o.diskSize ? { diskBytes: parseSize(o.diskSize, 'disk size') } : {}),
                start: o.start,
              });
              print(ctx.out, v, () => `${v.name}: ${v.state} (${v.accelerator})`);
            },
          ),
        ),
    op({
      usage: 'ls',
      description: 'the VMs',
      op: 'listVms',
      human: (r) =>
        table(
          ['NAME', 'STATE', 'VCPUS', 'MEMORY', 'ACCEL'],
          r.vms.map((v) => [v.name, v.state, v.vcpus, formatBytes(v.memoryBytes), v.accelerator]),
        ),
    }),
    op({
      usage: 'stop <name>',
      description: 'stop a VM (forced off after a grace period)',
      op: 'stopVm',
      param: 'vm',
      human: stateOf,
    }),
    op({ usage: 'start <name>', description: 'start a VM', op: 'startVm', param: 'vm', human: stateOf }),
    op({ usage: 'rm <name>', description: 'remove a VM and its disk', op: 'deleteVm', param: 'vm', ...removed }),
    tailed({
      usage: 'console <name>',
      tail: ['--tail <bytes>', 'bytes from the end', '65536'],
      follow: 'keep printing new output while the VM runs (Ctrl-C ends)',
      description: "the VM's serial console (read-only)",
      read: (s, name, tail) => s.vms.console(name, { tail }),
      followTail: 1024 * 1024,
      running: async (s, name) => (await s.vms.get(name)).state === 'running',
    }),
  ]);
}

type SpaceHandle = ReturnType<typeof inSpace>;

/**
 * `container logs`, `vm console`: the end of a text the workload writes, printed once, or
 * followed while the workload runs.
 */
function tailed<R extends { text: string }>(t: {
  usage: string;
  tail: [flags: string, help: string, byDefault: string];
  follow: string;
  description: string;
  read: (s: SpaceHandle, name: string, tail: number) => Promise<R>;
  /** How much to read each round while following. */
  followTail: number;
  running: (s: SpaceHandle, name: string) => Promise<boolean>;
}): Row {
  return (group, run) =>
    spaced(
      group
        .command(t.usage)
        .option(...t.tail)
        .option('-f, --follow', t.follow),
    )
      .description(t.description)
      .action(
        run(async (ctx, name: string, o: { tail: string; follow?: boolean; space?: string }) => {
          const s = inSpace(ctx, o.space);
          const first = await t.read(s, name, Number(o.tail));
          if (ctx.out.json && !o.follow) return print(ctx.out, first, () => '');
          process.stdout.write(first.text);
          if (!o.follow) return;
          await follow(
            first.text,
            async () => (await t.read(s, name, t.followTail)).text,
            () => t.running(s, name),
          );
        }),
      );
}

/**
 * Prints what a tail-only source adds, once a second, while `alive()`: each round's text is
 * matched against the end of the previous one, and only what follows it is printed.
 */
async function follow(first: string, next: () => Promise<string>, alive: () => Promise<boolean>): Promise<void> {
  let seen = first;
  for (;;) {
    await sleep(1000);
    const text = await next();
    const anchor = seen.slice(-Math.min(seen.length, 4096));
    const at = anchor ? text.lastIndexOf(anchor) : -1;
    const fresh = at >= 0 ? text.slice(at + anchor.length) : text;
    if (fresh) process.stdout.write(fresh);
    seen = text;
    if (!(await alive())) return;
  }
}
