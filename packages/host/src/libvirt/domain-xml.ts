/**
 * Builds a libvirt domain XML from a validated {@link VmSpec}, and nothing else: no template,
 * no text from the owner outside escaped values. What a domain gets, and why:
 * - `type='qemu'` (TCG) unless the KVM probe proved KVM works (then `type='kvm'`);
 * - machine `pc` (i440fx): the type libvirt and every guest kernel handle best;
 * - direct kernel boot from copies staged outside the space's storage, or disk boot;
 * - disks as virtio with an explicit format and `<backingStore/>`, so QEMU never probes a
 *   format or opens a backing file named inside an image;
 * - the serial console written to a file (no pty, no socket: nothing interactive), and the
 *   console element pointing at the same serial port;
 * - at most one NIC: virtio on the space's own bridge (libvirt's tap, no filter, no DHCP of
 *   libvirt's: the node's nftables table for the space rules what crosses the bridge), the
 *   address given by the daemon;
 * - NO graphics, video, sound, USB, host devices, passthrough or shared filesystems (libvirt
 *   itself adds only PS/2 input, which a PC machine always has, and a silent audio stub);
 * - a pvpanic device, so a guest kernel panic shows up as `crashed`;
 * - `<metadata>` in our namespace naming the space, VM, owner's name and the boot file sources.
 */
import { METADATA_NS, domainName } from './names.js';
import type { DiskFormat } from './paths.js';
import type { Accelerator, VmSpec } from './types.js';

/** Everything the XML is made from, after validation and file checks. */
export interface DomainPlan {
  spec: VmSpec;
  accelerator: Accelerator;
  /** Attached disks in order (vda, vdb): the boot disk first when booting from disk. */
  disks: { path: string; format: DiskFormat }[];
  /** Where the kernel (and initramfs) are copied before each start; required for kernel boot. */
  staged?: { kernel: string; initrd?: string };
  /** libvirt's QEMU group; required with `spec.runAsUid`. */
  qemuGid?: number;
}

/** Escapes text for XML element content and single- or double-quoted attributes. */
export function xmlEscape(value: string): string {
  return value
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const attr = (name: string, value: string | number): string => ` ${name}="${xmlEscape(String(value))}"`;
const el = (name: string, value: string | number): string => `<${name}>${xmlEscape(String(value))}</${name}>`;

function metadata(plan: DomainPlan): string {
  const { spec } = plan;
  let attrs = attr('space', spec.spaceId) + attr('vm', spec.vmId) + attr('name', spec.name);
  if (spec.boot.kind === 'kernel') {
    attrs += attr('kernel', spec.boot.kernel);
    if (spec.boot.initrd !== undefined) attrs += attr('initrd', spec.boot.initrd);
  }
  if (spec.storageRoot !== undefined) attrs += attr('storageRoot', spec.storageRoot);
  if (spec.network !== undefined) attrs += attr('bridge', spec.network.bridge) + attr('gateway', spec.network.gateway);
  return `  <metadata>\n    <ocs:vm xmlns:ocs="${METADATA_NS}"${attrs}/>\n  </metadata>`;
}

function os(plan: DomainPlan): string[] {
  const { boot } = plan.spec;
  const lines = ['  <os>', `    <type arch="x86_64" machine="pc">hvm</type>`];
  if (boot.kind === 'kernel') {
    if (!plan.staged) throw new Error('kernel boot needs staged boot file paths');
    lines.push(`    ${el('kernel', plan.staged.kernel)}`);
    if (boot.initrd !== undefined) {
      if (plan.staged.initrd === undefined) throw new Error('an initrd needs a staged path');
      lines.push(`    ${el('initrd', plan.staged.initrd)}`);
    }
    if (boot.cmdline !== undefined) lines.push(`    ${el('cmdline', boot.cmdline)}`);
  } else {
    lines.push('    <boot dev="hd"/>');
  }
  lines.push('  </os>');
  return lines;
}

/**
 * With `runAsUid`, QEMU runs as the space's uid and opens the space's files itself, so libvirt
 * must not chown them (a chown follows symlinks: a swapped-in link would hand a host file to
 * the space). Without it, libvirt's default labelling is what lets its shared QEMU user in.
 */
function noRelabel(plan: DomainPlan): string {
  return plan.spec.runAsUid === undefined ? '' : '<seclabel model="dac" relabel="no"/>';
}

function devices(plan: DomainPlan): string[] {
  const lines = ['  <devices>'];
  plan.disks.forEach((disk, i) => {
    lines.push(
      '    <disk type="file" device="disk">',
      `      <driver name="qemu"${attr('type', disk.format)}/>`,
      `      <source${attr('file', disk.path)}>${noRelabel(plan)}</source>`,
      '      <backingStore/>',
      `      <target${attr('dev', `vd${String.fromCharCode(97 + i)}`)} bus="virtio"/>`,
      '    </disk>',
    );
  });
  const net = plan.spec.network;
  if (net !== undefined)
    lines.push(
      '    <interface type="bridge">',
      `      <mac${attr('address', net.mac)}/>`,
      `      <source${attr('bridge', net.bridge)}/>`,
      '      <model type="virtio"/>',
      '    </interface>',
    );
  const log = plan.spec.consoleLogPath;
  lines.push(
    '    <controller type="usb" model="none"/>',
    `    <serial type="file"><source${attr('path', log)}>${noRelabel(plan)}</source><target port="0"/></serial>`,
    `    <console type="file"><source${attr('path', log)}>${noRelabel(plan)}</source><target type="serial" port="0"/></console>`,
    '    <memballoon model="none"/>',
    '    <panic model="isa"/>',
    '  </devices>',
  );
  return lines;
}

/** The complete domain XML for `plan`. */
export function buildDomainXml(plan: DomainPlan): string {
  const { spec } = plan;
  const kib = Math.floor(spec.memoryBytes / 1024);
  const lines = [
    `<domain type="${plan.accelerator === 'kvm' ? 'kvm' : 'qemu'}">`,
    `  ${el('name', domainName(spec.spaceId, spec.vmId))}`,
    metadata(plan),
    `  <memory unit="KiB">${kib}</memory>`,
    `  <currentMemory unit="KiB">${kib}</currentMemory>`,
    `  <vcpu placement="static">${spec.vcpus}</vcpu>`,
  ];
  if (spec.cgroupPartition !== undefined) lines.push(`  <resource>${el('partition', spec.cgroupPartition)}</resource>`);
  lines.push(
    ...os(plan),
    '  <features><acpi/><apic/></features>',
    '  <clock offset="utc"/>',
    // A guest power-off ends the VM; a guest reboot restarts it in place; a panic keeps the
    // (transient) domain, paused, as crashed until it is stopped.
    '  <on_poweroff>destroy</on_poweroff>',
    '  <on_reboot>restart</on_reboot>',
    '  <on_crash>preserve</on_crash>',
    ...devices(plan),
  );
  if (spec.runAsUid !== undefined) {
    if (plan.qemuGid === undefined) throw new Error('runAsUid needs the QEMU group');
    // relabel="yes" lets libvirt give the uid its own per-domain files (monitor socket, keys);
    // the space's disks and console opt out per source above.
    lines.push(
      '  <seclabel type="static" model="dac" relabel="yes">',
      `    <label>+${spec.runAsUid}:+${plan.qemuGid}</label>`,
      '  </seclabel>',
    );
  }
  lines.push('</domain>', '');
  return lines.join('\n');
}
