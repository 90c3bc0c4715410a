/**
 * The space process's sandbox: bubblewrap (Debian `bubblewrap`) builds the namespaces, util-linux
 * `setpriv` then drops to the space's uid with no capabilities and `no_new_privs`.
 *
 * Why bubblewrap: one audited tool does the whole mount-namespace dance (a fresh root of
 * read-only binds, a private /proc of a new PID namespace, a tmpfs /tmp) and loads a seccomp
 * program from a file descriptor; doing the same with `unshare` needs a shell script of mounts
 * run as root inside the new namespace. What the process gets:
 * - an empty network namespace (only a downed `lo`): no TCP to the host's loopback services, the
 *   cloud metadata address or anything else; it only needs its two unix sockets;
 * - a new PID namespace with its own /proc: other tenants' processes and command lines do not
 *   exist for it;
 * - a mount namespace holding only /usr (read-only), the node install (read-only), its own run
 *   directory and its own home in its encrypted storage: no other space's storage is even there;
 * - a seccomp filter refusing (EPERM) the system calls it never needs and that widen a kernel
 *   attack: mount, namespaces (unshare, setns, and clone with a namespace flag; clone3 is
 *   ENOSYS), ptrace, bpf, perf, keyrings, modules, io_uring, userfaultfd…
 */
import { rootLinks } from '@ocs/host';
import { dirname } from 'node:path';

/** x86_64 system call numbers the space process is refused. */
export const DENIED_SYSCALLS: Record<string, number> = {
  ptrace: 101,
  syslog: 103,
  personality: 135,
  pivot_root: 155,
  acct: 163,
  mount: 165,
  umount2: 166,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  sethostname: 170,
  setdomainname: 171,
  iopl: 172,
  ioperm: 173,
  init_module: 175,
  delete_module: 176,
  quotactl: 179,
  lookup_dcookie: 212,
  kexec_load: 246,
  add_key: 248,
  request_key: 249,
  keyctl: 250,
  unshare: 272,
  perf_event_open: 298,
  name_to_handle_at: 303,
  open_by_handle_at: 304,
  setns: 308,
  process_vm_readv: 310,
  process_vm_writev: 311,
  finit_module: 313,
  kexec_file_load: 320,
  bpf: 321,
  userfaultfd: 323,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  fsopen: 430,
  fsmount: 432,
  move_mount: 429,
  open_tree: 428,
};

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;
const SYS_CLONE = 56;
const SYS_CLONE3 = 435;
/**
 * clone(2) flags that make a namespace: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
 * NEWNET. (CLONE_NEWTIME, 0x80, exists only for clone3 and unshare; in clone's flags those bits
 * are the exit signal.) Refusing unshare(2) and setns(2) alone left this door open: a static
 * binary calling clone with CLONE_NEWUSER|CLONE_NEWNET got CAP_NET_ADMIN over nf_tables.
 */
export const CLONE_NAMESPACE_FLAGS =
  0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;
const RET_ALLOW = 0x7fff0000;
const RET_KILL_PROCESS = 0x80000000;
const RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;
// BPF opcodes
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;
/** Offset of seccomp_data.args[0]'s low 32 bits (little-endian x86_64): clone's flags. */
const ARG0_LOW = 16;

type Insn = [code: number, jt: number, jf: number, k: number];

/**
 * The classic-BPF seccomp program (struct sock_filter[]) bwrap loads with `--seccomp FD`:
 * a foreign architecture is killed; x32 calls and every {@link DENIED_SYSCALLS} entry get
 * EPERM; clone(2) with any {@link CLONE_NAMESPACE_FLAGS} gets EPERM (threads and forks pass);
 * clone3(2) gets ENOSYS, because a filter cannot read the flags inside its struct: glibc and
 * libuv then fall back to clone, as they do under container runtimes' filters. Everything else
 * is allowed.
 */
export function seccompProgram(denied: readonly number[] = Object.values(DENIED_SYSCALLS)): Buffer {
  // Jump targets are labels, resolved to the relative offsets classic BPF uses.
  const code: (Insn | { to: string; insn: (off: number) => Insn } | string)[] = [
    [LD_W_ABS, 0, 0, 4], // seccomp_data.arch
    [JEQ_K, 1, 0, AUDIT_ARCH_X86_64],
    [RET_K, 0, 0, RET_KILL_PROCESS],
    [LD_W_ABS, 0, 0, 0], // seccomp_data.nr
    { to: 'eperm', insn: (off) => [JGE_K, off, 0, X32_SYSCALL_BIT] },
    { to: 'clone', insn: (off) => [JEQ_K, off, 0, SYS_CLONE] },
    { to: 'enosys', insn: (off) => [JEQ_K, off, 0, SYS_CLONE3] },
    ...denied.map((nr) => ({ to: 'eperm', insn: (off: number): Insn => [JEQ_K, off, 0, nr] })),
    [RET_K, 0, 0, RET_ALLOW],
    // Classic BPF jumps forward only: the clone check sits before the returns it jumps to.
    'clone',
    [LD_W_ABS, 0, 0, ARG0_LOW],
    { to: 'eperm', insn: (off) => [JSET_K, off, 0, CLONE_NAMESPACE_FLAGS] },
    [RET_K, 0, 0, RET_ALLOW],
    'eperm',
    [RET_K, 0, 0, RET_ERRNO | EPERM],
    'enosys',
    [RET_K, 0, 0, RET_ERRNO | ENOSYS],
  ];
  const labels = new Map<string, number>();
  let pc = 0;
  for (const c of code) {
    if (typeof c === 'string') labels.set(c, pc);
    else pc++;
  }
  const ins: Insn[] = [];
  for (const c of code) {
    if (typeof c === 'string') continue;
    if (Array.isArray(c)) ins.push(c);
    else {
      const off = labels.get(c.to)! - (ins.length + 1);
      if (off < 0 || off > 255) throw new Error(`seccomp jump to ${c.to} out of range`);
      ins.push(c.insn(off));
    }
  }
  const buf = Buffer.alloc(ins.length * 8);
  ins.forEach(([op, jt, jf, k], i) => {
    buf.writeUInt16LE(op, i * 8);
    buf.writeUInt8(jt, i * 8 + 2);
    buf.writeUInt8(jf, i * 8 + 3);
    buf.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return buf;
}

export interface SandboxSpec {
  uid: number;
  /** Read-only: the node install (the bundle and its native modules). */
  installRoot: string;
  /** Read-write: the space's run directory (its sockets and config). */
  runDir: string;
  /** Read-write: the space's home in its encrypted storage. */
  dataDir: string;
  /** The Node binary. */
  nodePath: string;
  /** The fd (in the child) bwrap reads the seccomp program from. */
  seccompFd: number;
  argv: string[];
}

/**
 * The directories above the binds, made 0755 (bwrap would make them 0700, root's, which the
 * space's uid could not pass through). They are empty directories of the sandbox's own root.
 */
function parents(targets: readonly string[]): string[] {
  const out = new Set<string>();
  for (const t of targets) {
    for (let d = dirname(t); d !== '/' && !d.startsWith('/usr'); d = dirname(d)) out.add(d);
  }
  return [...out]
    .sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1))
    .flatMap((d) => ['--perms', '0755', '--dir', d]);
}

/** argv (after `bwrap`) that runs `spec.argv` as the space's uid inside the sandbox. */
export function sandboxArgs(spec: SandboxSpec): string[] {
  const nodeOutsideUsr = !spec.nodePath.startsWith('/usr/');
  const binds = [...(nodeOutsideUsr ? [dirname(spec.nodePath)] : []), spec.installRoot, spec.runDir, spec.dataDir];
  return [
    '--unshare-net',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--die-with-parent',
    '--new-session',
    '--hostname',
    'space',
    '--ro-bind',
    '/usr',
    '/usr',
    ...rootLinks(),
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    ...parents(binds),
    ...(nodeOutsideUsr ? ['--ro-bind', dirname(spec.nodePath), dirname(spec.nodePath)] : []),
    '--ro-bind',
    spec.installRoot,
    spec.installRoot,
    '--bind',
    spec.runDir,
    spec.runDir,
    '--bind',
    spec.dataDir,
    spec.dataDir,
    '--chdir',
    '/',
    '--seccomp',
    String(spec.seccompFd),
    '--',
    'setpriv',
    `--reuid=${spec.uid}`,
    `--regid=${spec.uid}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
    ...spec.argv,
  ];
}
