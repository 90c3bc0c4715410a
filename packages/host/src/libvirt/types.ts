/**
 * Public types of the VM driver: what the node daemon's privileged broker asks for, and the
 * small interface it talks to. Nothing here depends on the libvirt binding.
 */

/** How the guest boots: a kernel (+ initramfs, command line) given directly, or from a disk. */
export type VmBoot =
  { kind: 'kernel'; kernel: string; initrd?: string; cmdline?: string } | { kind: 'disk'; disk: string };

/**
 * One VM as the broker asks for it. Every path is an absolute host path that the broker has
 * already checked lies inside the space's storage; the driver checks again (normalized, no
 * symlink anywhere on the path, right file type, inside `storageRoot` when given).
 */
export interface VmSpec {
  /** `sp_` + lowercase letters/digits (the protocol's SpaceId). */
  spaceId: string;
  /** `vm_` + lowercase letters/digits (the protocol's VmId). */
  vmId: string;
  /** The owner's name for the VM (the protocol's `Name`); kept in the domain's metadata only. */
  name: string;
  /** 1..64. */
  vcpus: number;
  /** 64 MiB .. 1 TiB; libvirt takes KiB, so it is rounded down to a whole KiB. */
  memoryBytes: number;
  boot: VmBoot;
  /** An extra raw or qcow2 disk (vda with kernel boot, vdb with disk boot). */
  diskPath?: string;
  /** The serial console is written to this file (truncated at every start). */
  consoleLogPath: string;
  /**
   * The cgroup (absolute, e.g. `/ocs.slice/sp_x.space/vms.partition`) under which libvirt puts
   * the VM's own group. Every component must contain a `.`: libvirt appends `.partition` to any
   * component without one, so a dotless path would silently land somewhere else (see
   * partition.ts). Missing directories are created at start. Absent: libvirt's `/machine`.
   */
  cgroupPartition?: string;
  /**
   * Run QEMU as this uid (the space's uid) instead of libvirt's shared `libvirt-qemu` user, so
   * VMs of different spaces cannot signal or ptrace each other, and disk and console files are
   * used without libvirt changing their owner. The group is libvirt's QEMU group (it must reach
   * libvirt's per-domain directory).
   */
  runAsUid?: number;
  /** When given, every path above must lie strictly inside this directory. */
  storageRoot?: string;
  /**
   * One virtio NIC on the space's bridge (`ocsbr…`), which is made with `gateway` (`a.b.c.d/n`)
   * on it at every start if it is not there; the node's firewall rules what crosses it. Absent:
   * no network at all.
   */
  network?: { bridge: string; mac: string; gateway: string };
}

/** A VM's state as the API reports it. `defined` = never started since libvirtd last started. */
export type VmState = 'defined' | 'running' | 'shutoff' | 'crashed' | 'paused';

/** The end of a VM's serial console log. */
export interface ConsoleTail {
  text: string;
  /** True when the log holds more than the returned tail. */
  truncated: boolean;
}

/** The accelerator QEMU uses: `kvm` only when a probe proved it works (and is fast). */
export type Accelerator = 'kvm' | 'tcg';

/**
 * The VM operations the broker needs. Every VM is addressed by (spaceId, vmId); a VM of one
 * space is never visible or reachable through another space's id. Errors for callers are
 * OcsError: `invalid_request` (bad spec or ids), `not_found`, `conflict`; anything else is a
 * plain Error (an internal failure to log).
 */
export interface VmDriver {
  /** Chosen once, at creation: `kvm` only if a KVM probe really ran; otherwise `tcg`. */
  readonly accelerator: Accelerator;
  /** Why that accelerator was chosen (for the daemon's log). */
  readonly acceleratorReason: string;
  /** Defines (does not start) the VM: its definition is written into the space; `conflict` if it exists already. */
  define(spec: VmSpec): Promise<void>;
  /** Starts a defined VM; no-op when it already runs. */
  start(spaceId: string, vmId: string): Promise<void>;
  /** ACPI shutdown, then destroy after `graceSeconds` (default 30; 0 = destroy at once). No-op when not running. */
  stop(spaceId: string, vmId: string, opts?: { graceSeconds?: number }): Promise<void>;
  /** Removes a stopped VM's definition; `conflict` while it runs. */
  undefine(spaceId: string, vmId: string): Promise<void>;
  state(spaceId: string, vmId: string): Promise<VmState>;
  /** The last `tailBytes` (1 .. 1 MiB) of the serial console log. */
  readConsole(spaceId: string, vmId: string, opts: { tailBytes: number }): Promise<ConsoleTail>;
  /** Every space with a domain running here, with their VM ids, by our domain names (for reconciliation). */
  listAllSpaces(): Promise<Map<string, string[]>>;
  /** Destroys every VM of the space and removes its definitions. Idempotent. */
  removeAllForSpace(spaceId: string): Promise<void>;
  /** Closes the libvirt connection. */
  close(): Promise<void>;
}

/** Options of createVmDriver. */
export interface VmDriverOptions {
  /** libvirt URI; default `qemu:///system`. */
  uri?: string;
  /** `auto` (default) boots the guest kernel under KVM to see if it works here; `tcg` and `kvm` force. */
  accelerator?: 'auto' | 'tcg' | 'kvm';
  /** The kernel the KVM probe boots; default the newest /boot/vmlinuz-*. */
  probeKernel?: string;
  /** Where the probe's verdict is remembered across starts (e.g. in the daemon's state dir). */
  verdictFile?: string;
  /**
   * Root-only directory (tmpfs is best) where the kernel and initramfs are copied just before
   * a start, so libvirt and QEMU never open them inside the space's storage. Default
   * `/run/ocs/vm-boot`.
   */
  stagingDir?: string;
  /**
   * Where a space's VM definitions are kept: `<dir>/<vmId>/domain.xml`, inside the space's
   * encrypted storage (libvirt only ever gets transient domains). Undefined when the space's
   * storage is not reachable (locked).
   */
  vmsDir: (spaceId: string) => Promise<string | undefined>;
}
