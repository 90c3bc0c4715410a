/**
 * The production-like guest (issue 10): built by scripts/guest/build.sh (cached outside the
 * clone), booted with QEMU, running one shell script as root from this clone, shared with it
 * read-only over 9p. systemd is PID 1 with the unified cgroup v2 hierarchy; the script runs in
 * a unit with `Delegate=yes`, and ZFS 2.3 is there for real. Extra virtual disks are files the
 * host reads afterwards (the at-rest checks).
 *
 * The accelerator is the daemon's own choice (KVM only where a real guest kernel boots under
 * it; TCG here). A guest that cannot be built, or does not finish, fails: this never passes
 * without running.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseAccelerator, run as runCommand } from '@ocs/host';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BUILD = join(ROOT, 'scripts', 'guest', 'build.sh');
const RUNNER = join(ROOT, 'scripts', 'guest', 'runner');

export interface GuestImage {
  dir: string;
  /** Seconds the build (or the cache lookup) took. */
  seconds: number;
}

/** Builds the guest image or finds it in the cache; its build log goes to stderr. */
export async function buildGuest(): Promise<GuestImage> {
  const t0 = Date.now();
  const dir = await new Promise<string>((resolve, reject) => {
    const p = spawn('bash', [BUILD], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (c) =>
      c === 0 ? resolve(out.trim().split('\n').at(-1)!) : reject(new Error(`scripts/guest/build.sh exited ${c}`)),
    );
  });
  return { dir, seconds: (Date.now() - t0) / 1000 };
}

export interface GuestDisk {
  /** The disk appears in the guest as /dev/disk/by-id/virtio-NAME. */
  name: string;
  bytes: number;
}

export interface GuestResult {
  /** The script's exit code. */
  code: number;
  /** What the script printed. */
  log: string;
  /** The serial console, the kernel and systemd included. */
  console: string;
  /** Seconds from QEMU's start to power-off. */
  seconds: number;
  accelerator: string;
  /** The disks' files; valid until `cleanup()`. */
  disks: Record<string, string>;
  /** A file the script wrote into its share (/run/ocs-guest/NAME), or undefined. */
  shared(name: string): string | undefined;
  cleanup(): void;
}

/**
 * Boots the guest and runs `script` (bash, cwd the clone, root, in the delegated unit) to its
 * end. Environment for the script: OCS_GUEST_CGROUP, the unit's delegated cgroup (the script
 * runs in its `runner` leaf).
 */
export async function runInGuest(
  image: GuestImage,
  script: string,
  o: {
    disks?: GuestDisk[];
    /** Host files copied into the share: the guest reads them as /run/ocs-guest/NAME. */
    files?: Record<string, string>;
    timeoutSeconds?: number;
    memoryMiB?: number;
  } = {},
): Promise<GuestResult> {
  const accel = await chooseAccelerator({
    setting: (process.env.OCS_GUEST_ACCEL as 'auto' | 'tcg' | 'kvm' | undefined) ?? 'auto',
    kernel: join(image.dir, 'vmlinuz'),
    verdictFile: join(image.dir, '..', 'accelerator.json'),
  });
  const run = mkdtempSync(join(tmpdir(), 'ocs-guest-'));
  const cleanup = () => rmSync(run, { recursive: true, force: true });
  try {
    const out = join(run, 'out');
    mkdirSync(out);
    writeFileSync(join(out, 'workdir'), ROOT.replace(/\/$/, ''));
    writeFileSync(join(out, 'cmd'), script);
    copyFileSync(RUNNER, join(out, 'runner'));
    for (const [name, path] of Object.entries(o.files ?? {})) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || ['cmd', 'runner', 'workdir', 'log', 'rc'].includes(name))
        throw new Error(`a shared file cannot be named ${name}`);
      copyFileSync(path, join(out, name));
    }
    await runCommand('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      join(image.dir, 'root.img'),
      join(run, 'root.qcow2'),
    ]);
    const disks: Record<string, string> = {};
    // The root first, so it is /dev/vda whatever else is attached.
    const drives: string[] = [
      ...['-drive', `file=${join(run, 'root.qcow2')},if=none,format=qcow2,id=root`],
      ...['-device', 'virtio-blk-pci,drive=root'],
    ];
    for (const d of o.disks ?? []) {
      const file = join(run, `${d.name}.img`);
      const fd = openSync(file, 'w', 0o600);
      ftruncateSync(fd, d.bytes);
      closeSync(fd);
      disks[d.name] = file;
      drives.push(
        '-drive',
        `file=${file},if=none,format=raw,id=${d.name}`,
        '-device',
        `virtio-blk-pci,drive=${d.name},serial=${d.name}`,
      );
    }
    const args = [
      ...['-accel', accel.accelerator, '-M', 'pc', '-cpu', accel.accelerator === 'kvm' ? 'host' : 'max'],
      ...['-m', String(o.memoryMiB ?? 3072), '-smp', '2', '-display', 'none', '-monitor', 'none', '-serial', 'stdio'],
      '-no-reboot',
      ...['-kernel', join(image.dir, 'vmlinuz'), '-initrd', join(image.dir, 'initrd.img')],
      // No `rootdelay=`: Debian's initramfs sleeps for all of it, whether the disk is there or
      // not (its /init: `sleep "$ROOTDELAY"`); rootdelay=300 was five of every boot's six minutes.
      ...['-append', 'root=/dev/vda rw console=ttyS0 panic=1 systemd.show_status=0 loglevel=4'],
      ...drives,
      ...['-virtfs', `local,path=${ROOT},mount_tag=ocs-work,security_model=none,readonly=on`],
      ...['-virtfs', `local,path=${out},mount_tag=ocs-out,security_model=none`],
    ];
    const t0 = Date.now();
    const console = await new Promise<string>((resolve, reject) => {
      const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      p.stdout.on('data', (d: Buffer) => (text += d.toString()));
      p.stderr.on('data', (d: Buffer) => (text += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), (o.timeoutSeconds ?? 1800) * 1000);
      p.on('error', reject);
      p.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
    });
    const seconds = (Date.now() - t0) / 1000;
    const rcFile = join(out, 'rc');
    if (!existsSync(rcFile)) {
      throw new Error(
        `the guest did not finish its script in ${seconds} s (${accel.accelerator}); console:\n${console.slice(-6000)}`,
      );
    }
    return {
      code: Number(readFileSync(rcFile, 'utf8').trim()),
      log: existsSync(join(out, 'log')) ? readFileSync(join(out, 'log'), 'utf8') : '',
      console,
      seconds,
      accelerator: `${accel.accelerator} (${accel.reason})`,
      disks,
      shared: (name) => {
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`no shared file is named ${name}`);
        const path = join(out, name);
        return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
      },
      cleanup,
    };
  } catch (err) {
    cleanup();
    throw err;
  }
}
