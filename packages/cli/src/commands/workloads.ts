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
import type { Context } from '../context.js';
import type { Run } from '../main.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function inSpace(ctx: Context, flag?: string) {
  const { spaceId } = ctx.space(flag);
  return ctx.client({ owner: true }).space(spaceId);
}

/** Adds `--space` to a command (any in-space command takes it). */
export const spaced = (c: Command) => c.option('--space <id>', 'the space (default: the current one)');

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

function upload(label: string, file: string) {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error();
    size = st.size;
  } catch {
    throw new UsageError(`${file} is not a readable file`);
  }
  return { size, bar: progressBar(`${label} ${basename(file)}`) };
}

export function workloadCommands(program: Command, run: Run): void {
  // Volumes.
  const volume = program.command('volume').description("volumes: encrypted directories in the space's storage");
  spaced(volume.command('create <name>').requiredOption('--size <size>', 'e.g. 1GiB'))
    .description('make a volume')
    .action(
      run(async (ctx, name: string, o: { size: string; space?: string }) => {
        const v = await inSpace(ctx, o.space).volumes.create({ name, sizeBytes: parseSize(o.size) });
        print(ctx.out, v, () => `${v.name}: ${formatBytes(v.sizeBytes)}`);
      }),
    );
  spaced(volume.command('ls'))
    .description('the volumes')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const r = await inSpace(ctx, o.space).volumes.list();
        print(ctx.out, r, () =>
          table(
            ['NAME', 'SIZE', 'CREATED'],
            r.volumes.map((v) => [v.name, formatBytes(v.sizeBytes), v.createdAt]),
          ),
        );
      }),
    );
  spaced(volume.command('rm <name>'))
    .description('destroy a volume and its data')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        await inSpace(ctx, o.space).volumes.delete(name);
        print(ctx.out, { removed: name }, () => `${name}: removed`);
      }),
    );

  // Images.
  const image = program.command('image').description('images: docker save tarballs loaded into the space');
  spaced(image.command('load <file>').option('--name <name>', 'its name in the space (default: from the file name)'))
    .description('load a `docker save` / `podman save` tarball (streamed, with progress)')
    .action(
      run(async (ctx, file: string, o: { name?: string; space?: string }) => {
        const name =
          o.name ??
          basename(file)
            .replace(/\.tar$/, '')
            .toLowerCase();
        if (!NAME_RE.test(name)) throw new UsageError(`${JSON.stringify(name)} is not a valid image name: pass --name`);
        const { bar } = upload('loading', file);
        try {
          const img = await inSpace(ctx, o.space).images.load(name, { path: file }, { onProgress: bar.update });
          bar.done();
          print(ctx.out, img, () => `${img.name}: loaded (${formatBytes(img.sizeBytes)})`);
        } catch (err) {
          bar.done();
          throw err;
        }
      }),
    );
  spaced(image.command('ls'))
    .description('the images')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const r = await inSpace(ctx, o.space).images.list();
        print(ctx.out, r, () =>
          table(
            ['NAME', 'SIZE', 'LOADED'],
            r.images.map((i) => [i.name, formatBytes(i.sizeBytes), i.loadedAt]),
          ),
        );
      }),
    );
  spaced(image.command('rm <name>'))
    .description('remove an image')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        await inSpace(ctx, o.space).images.delete(name);
        print(ctx.out, { removed: name }, () => `${name}: removed`);
      }),
    );

  // Files (kernels, disk images).
  const file = program.command('file').description("files: kernels, initramfs and disk images in the space's storage");
  spaced(file.command('upload <path>').option('--name <name>', 'its name in the space (default: the file name)'))
    .description('upload a file (streamed, with progress)')
    .action(
      run(async (ctx, path: string, o: { name?: string; space?: string }) => {
        const name = o.name ?? basename(path).toLowerCase();
        if (!NAME_RE.test(name)) throw new UsageError(`${JSON.stringify(name)} is not a valid file name: pass --name`);
        const { bar } = upload('uploading', path);
        try {
          const f = await inSpace(ctx, o.space).files.upload(name, { path }, { onProgress: bar.update });
          bar.done();
          print(ctx.out, f, () => `${f.name}: ${formatBytes(f.sizeBytes)}, sha256 ${f.sha256}`);
        } catch (err) {
          bar.done();
          throw err;
        }
      }),
    );
  spaced(file.command('ls'))
    .description('the files')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const r = await inSpace(ctx, o.space).files.list();
        print(ctx.out, r, () =>
          table(
            ['NAME', 'SIZE', 'SHA256'],
            r.files.map((f) => [f.name, formatBytes(f.sizeBytes), f.sha256]),
          ),
        );
      }),
    );
  spaced(file.command('rm <name>'))
    .description('delete a file')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        await inSpace(ctx, o.space).files.delete(name);
        print(ctx.out, { removed: name }, () => `${name}: removed`);
      }),
    );

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
  spaced(container.command('ls'))
    .description('the containers')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const r = await inSpace(ctx, o.space).containers.list();
        print(ctx.out, r, () =>
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
        );
      }),
    );
  spaced(container.command('show <name>'))
    .description('one container')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        const c = await inSpace(ctx, o.space).containers.get(name);
        print(ctx.out, c, () => showContainer(c));
      }),
    );
  spaced(
    container
      .command('logs <name>')
      .option('--tail <n>', 'lines from the end', '200')
      .option('-f, --follow', 'keep printing new lines until the container stops (Ctrl-C ends)'),
  )
    .description('stdout and stderr of a container')
    .action(
      run(async (ctx, name: string, o: { tail: string; follow?: boolean; space?: string }) => {
        const s = inSpace(ctx, o.space);
        const tail = Number(o.tail);
        const first = await s.containers.logs(name, { tail });
        if (ctx.out.json && !o.follow) return print(ctx.out, first, () => '');
        process.stdout.write(first.text);
        if (!o.follow) return;
        await follow(
          first.text,
          async () => (await s.containers.logs(name, { tail: 10_000 })).text,
          async () => (await s.containers.get(name)).state === 'running',
        );
      }),
    );
  spaced(container.command('stats <name>'))
    .description('memory, CPU and processes of a running container')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        const st = await inSpace(ctx, o.space).containers.stats(name);
        print(ctx.out, st, () =>
          keyValues([
            ['memory', `${formatBytes(st.memoryBytes)} of ${formatBytes(st.memoryLimitBytes)}`],
            ['cpu time', `${(st.cpuNanos / 1e9).toFixed(2)} s`],
            ['pids', st.pids],
          ]),
        );
      }),
    );
  for (const [verb, what] of [
    ['stop', 'stop a container'],
    ['start', 'start a stopped container'],
  ] as const) {
    spaced(container.command(`${verb} <name>`))
      .description(what)
      .action(
        run(async (ctx, name: string, o: { space?: string }) => {
          const c = await inSpace(ctx, o.space).containers[verb](name);
          print(ctx.out, c, () => `${c.name}: ${c.state}`);
        }),
      );
  }
  spaced(container.command('rm <name>'))
    .description('remove a container (stopping it first)')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        await inSpace(ctx, o.space).containers.delete(name);
        print(ctx.out, { removed: name }, () => `${name}: removed`);
      }),
    );

  // VMs.
  const vm = program.command('vm').description('VMs (libvirt/QEMU) booted from uploaded files');
  spaced(
    vm
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
    );
  spaced(vm.command('ls'))
    .description('the VMs')
    .action(
      run(async (ctx, o: { space?: string }) => {
        const r = await inSpace(ctx, o.space).vms.list();
        print(ctx.out, r, () =>
          table(
            ['NAME', 'STATE', 'VCPUS', 'MEMORY', 'ACCEL'],
            r.vms.map((v) => [v.name, v.state, v.vcpus, formatBytes(v.memoryBytes), v.accelerator]),
          ),
        );
      }),
    );
  for (const [verb, what] of [
    ['stop', 'stop a VM (forced off after a grace period)'],
    ['start', 'start a VM'],
  ] as const) {
    spaced(vm.command(`${verb} <name>`))
      .description(what)
      .action(
        run(async (ctx, name: string, o: { space?: string }) => {
          const v = await inSpace(ctx, o.space).vms[verb](name);
          print(ctx.out, v, () => `${v.name}: ${v.state}`);
        }),
      );
  }
  spaced(vm.command('rm <name>'))
    .description('remove a VM and its disk')
    .action(
      run(async (ctx, name: string, o: { space?: string }) => {
        await inSpace(ctx, o.space).vms.delete(name);
        print(ctx.out, { removed: name }, () => `${name}: removed`);
      }),
    );
  spaced(
    vm
      .command('console <name>')
      .option('--tail <bytes>', 'bytes from the end', '65536')
      .option('-f, --follow', 'keep printing new output while the VM runs (Ctrl-C ends)'),
  )
    .description("the VM's serial console (read-only)")
    .action(
      run(async (ctx, name: string, o: { tail: string; follow?: boolean; space?: string }) => {
        const s = inSpace(ctx, o.space);
        const r = await s.vms.console(name, { tail: Number(o.tail) });
        if (ctx.out.json && !o.follow) return print(ctx.out, r, () => '');
        process.stdout.write(r.text);
        if (!o.follow) return;
        await follow(
          r.text,
          async () => (await s.vms.console(name, { tail: 1024 * 1024 })).text,
          async () => (await s.vms.get(name)).state === 'running',
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
