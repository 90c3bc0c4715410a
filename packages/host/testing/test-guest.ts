/**
 * Test helper: a tiny bootable guest made from what is already on the machine, no download.
 * The kernel is Debian's `linux-image-amd64` (/boot/vmlinuz-*), the initramfs is written here
 * with {@link writeCpio}: Debian's `busybox-static` as the only binary and a shell script as
 * /init that prints a random marker on the serial port and then does what the test asks.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { S_IFCHR, S_IFDIR, S_IFREG, writeCpio, type CpioEntry } from './cpio.js';

/**
 * What /init does after printing the boot marker:
 * - `poweroff`: powers off at once (`poweroff -f`), so the domain goes to shutoff by itself;
 * - `acpi`: loads the ACPI power-button driver and powers off when the button is pressed,
 *   i.e. it honours a graceful `stop`;
 * - `hang`: ignores the power button (the driver is not loaded), so `stop` must destroy it;
 * - `panic`: loads the pvpanic driver and crashes the kernel (sysrq `c`), so QEMU reports a
 *   guest panic and libvirt ends the domain as crashed;
 * - `serve`: loads virtio-net, sets the address and gateway the daemon gave it (`ocs.ip=`,
 *   `ocs.gw=` in its command line) on eth0 (then prints `OCS-VM-NET-UP`), and answers `answer-of-vm`
 *   on TCP port 8080; with
 *   `ocs.probe=HOST:PORT` it then tries that once and prints `OCS-VM-PROBE-OPEN` or `-SHUT`.
 */
export type GuestBehaviour = 'poweroff' | 'acpi' | 'hang' | 'panic' | 'serve';

/** Kernel modules (relative to /lib/modules/<version>/kernel) each behaviour loads, in order. */
const MODULES: Record<GuestBehaviour, string[]> = {
  poweroff: [],
  acpi: ['drivers/input/evdev.ko', 'drivers/acpi/button.ko'],
  hang: [],
  panic: ['drivers/misc/pvpanic/pvpanic.ko', 'drivers/misc/pvpanic/pvpanic-mmio.ko'],
  // In modules.dep's order: the PCI transport, then the NIC.
  serve: [
    'drivers/virtio/virtio_ring.ko',
    'drivers/virtio/virtio.ko',
    'drivers/virtio/virtio_pci_legacy_dev.ko',
    'drivers/virtio/virtio_pci_modern_dev.ko',
    'drivers/virtio/virtio_pci.ko',
    'net/core/failover.ko',
    'drivers/net/net_failover.ko',
    'drivers/net/virtio_net.ko',
  ],
};

/** Files of one test guest, all inside the directory given to {@link buildTestGuest}. */
export interface TestGuest {
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Printed on ttyS0 once /init runs (`OCS-VM-BOOTED-<random>`). */
  bootMarker: string;
  /** Printed once the guest is ready for the behaviour (e.g. the power button is watched). */
  readyMarker: string;
}

const BUSYBOX = '/bin/busybox';

/** The newest /boot/vmlinuz-* whose modules are installed, or null when there is none. */
export async function findHostKernel(): Promise<{ path: string; version: string } | null> {
  let names: string[];
  try {
    names = await readdir('/boot');
  } catch {
    return null;
  }
  const versions = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .sort()
    .reverse();
  for (const version of versions) {
    const all = Object.values(MODULES).flat();
    if ((await Promise.all(all.map((m) => exists(join('/lib/modules', version, 'kernel', m))))).every(Boolean)) {
      return { path: join('/boot', `vmlinuz-${version}`), version };
    }
  }
  return null;
}

/** Why a test guest cannot be built here, or null when it can. */
export async function testGuestUnavailable(): Promise<string | null> {
  if (!(await findHostKernel())) return 'no /boot/vmlinuz-* with its modules (apt-get install linux-image-amd64)';
  if (!(await exists(BUSYBOX))) return 'no /bin/busybox (apt-get install busybox-static)';
  return null;
}

/** Writes kernel + initramfs for `behaviour` into `dir` (which the test owns and removes). */
export async function buildTestGuest(dir: string, behaviour: GuestBehaviour): Promise<TestGuest> {
  const host = await findHostKernel();
  if (!host) throw new Error('no guest kernel on this machine');
  const id = randomBytes(6).toString('hex');
  const bootMarker = `OCS-VM-BOOTED-${id}`;
  const readyMarker = `OCS-VM-READY-${id}`;
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys'].map((name) => ({ name, mode: S_IFDIR | 0o755 })),
    // The kernel opens /dev/console for init's stdin/out/err before /init mounts devtmpfs.
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: await readFile(BUSYBOX) },
    { name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(initScript(behaviour, bootMarker, readyMarker)) },
  ];
  for (const m of MODULES[behaviour]) {
    const data = await readFile(join('/lib/modules', host.version, 'kernel', m));
    entries.push({ name: basename(m), mode: S_IFREG | 0o644, data });
  }
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.cpio');
  // A copy, like a kernel the owner put in the space's storage; libvirt may relabel it.
  await copyFile(host.path, kernel);
  await writeFile(initrd, writeCpio(entries));
  return { kernel, initrd, cmdline: 'console=ttyS0 panic=-1 quiet', bootMarker, readyMarker };
}

function initScript(behaviour: GuestBehaviour, bootMarker: string, readyMarker: string): string {
  const lines = [
    '#!/bin/busybox sh',
    '/bin/busybox --install -s /bin',
    'export PATH=/bin',
    'mount -t devtmpfs dev /dev',
    'mount -t proc proc /proc',
    'mount -t sysfs sys /sys',
    `echo ${bootMarker} > /dev/ttyS0`,
  ];
  switch (behaviour) {
    case 'poweroff':
      lines.push(`echo ${readyMarker} > /dev/ttyS0`, 'poweroff -f');
      break;
    case 'acpi':
      // The power button is an input device once button.ko is loaded; the first event on any
      // of them (QEMU's system_powerdown presses it) powers the guest off. evdev makes the
      // /dev/input/event* nodes. Ready is announced only once the button device exists.
      lines.push(
        'insmod /evdev.ko',
        'insmod /button.ko',
        'n=0; until grep -qs "Power Button" /sys/class/input/input*/name || [ $n -ge 100 ]; do sleep 0.1; n=$((n+1)); done',
        'for e in /dev/input/event*; do [ -e "$e" ] && (head -c 1 "$e" >/dev/null && echo OCS-VM-ACPI-POWEROFF > /dev/ttyS0 && poweroff -f) & done',
        `grep -qs "Power Button" /sys/class/input/input*/name && echo ${readyMarker} > /dev/ttyS0`,
      );
      break;
    case 'hang':
      lines.push(`echo ${readyMarker} > /dev/ttyS0`);
      break;
    case 'serve':
      lines.push(
        ...MODULES.serve.map((m) => `insmod /${basename(m)}`),
        'for w in $(cat /proc/cmdline); do case $w in ocs.ip=*) ip=${w#ocs.ip=};; ocs.gw=*) gw=${w#ocs.gw=};; ocs.probe=*) probe=${w#ocs.probe=};; esac; done',
        'n=0; until [ -e /sys/class/net/eth0 ] || [ $n -ge 100 ]; do sleep 0.1; n=$((n+1)); done',
        'ip link set lo up; ip link set eth0 up && ip addr add "$ip" dev eth0 && ip route add default via "$gw" && echo OCS-VM-NET-UP > /dev/ttyS0',
        '(while :; do echo answer-of-vm | nc -l -p 8080; done) &',
        `echo ${readyMarker} > /dev/ttyS0`,
        'if [ -n "$probe" ]; then if nc -w 3 "${probe%:*}" "${probe#*:}" </dev/null >/dev/null 2>&1; then echo OCS-VM-PROBE-OPEN; else echo OCS-VM-PROBE-SHUT; fi > /dev/ttyS0; fi',
      );
      break;
    case 'panic':
      lines.push(
        'insmod /pvpanic.ko',
        'insmod /pvpanic-mmio.ko',
        `echo ${readyMarker} > /dev/ttyS0`,
        'echo c > /proc/sysrq-trigger',
      );
      break;
  }
  // PID 1 must never exit (the kernel would panic and, with panic=-1, reboot).
  lines.push('while :; do sleep 3600; done', '');
  return lines.join('\n');
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
