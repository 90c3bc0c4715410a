import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS, sandboxArgs, seccompProgram } from './sandbox.js';

/** Runs the classic-BPF program the way the kernel would, for one (arch, nr, first argument). */
function evaluate(prog: Buffer, arch: number, nr: number, arg0 = 0): number {
  let acc = 0;
  for (let pc = 0; pc < prog.length / 8;) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog.readUInt8(pc * 8 + 2);
    const jf = prog.readUInt8(pc * 8 + 3);
    const k = prog.readUInt32LE(pc * 8 + 4);
    if (code === 0x20) acc = k === 4 ? arch : k === 0 ? nr : k === 16 ? arg0 >>> 0 : NaN;
    else if (code === 0x15) pc += acc === k ? jt : jf;
    else if (code === 0x45) pc += (acc & k) !== 0 ? jt : jf;
    else if (code === 0x35) pc += acc >= k ? jt : jf;
    else if (code === 0x06) return k;
    else throw new Error(`opcode ${code}`);
    pc++;
  }
  throw new Error('fell off the program');
}

test('the seccomp program refuses the listed calls and x32, allows the rest, kills a foreign arch', () => {
  const prog = seccompProgram();
  const X86_64 = 0xc000003e;
  for (const [name, nr] of Object.entries(DENIED_SYSCALLS))
    assert.equal(evaluate(prog, X86_64, nr), 0x00050001, `${name} gets EPERM`);
  for (const nr of [0, 1, 2, 3, 9, 56, 57, 59, 60, 231, 257, 434, 436])
    assert.equal(evaluate(prog, X86_64, nr), 0x7fff0000);
  assert.equal(evaluate(prog, X86_64, 0x40000000 + 1), 0x00050001, 'x32 calls');
  assert.equal(evaluate(prog, 0x40000003, 1), 0x80000000, 'i386 is killed');
});

test('clone passes for threads and forks, never with a namespace flag; clone3 is ENOSYS', () => {
  const prog = seccompProgram();
  const X86_64 = 0xc000003e;
  const CLONE = 56;
  // glibc's pthread_create and fork (SIGCHLD) flags.
  const THREAD = 0x3d0f00;
  for (const flags of [THREAD, 17, 0x01000000 | 0x00200000 | 17])
    assert.equal(evaluate(prog, X86_64, CLONE, flags), 0x7fff0000, `clone(${flags.toString(16)})`);
  const names = {
    NEWNS: 0x20000,
    NEWCGROUP: 0x2000000,
    NEWUTS: 0x4000000,
    NEWIPC: 0x8000000,
    NEWUSER: 0x10000000,
    NEWPID: 0x20000000,
    NEWNET: 0x40000000,
  };
  for (const [name, flag] of Object.entries(names)) {
    assert.ok((CLONE_NAMESPACE_FLAGS & flag) !== 0, name);
    assert.equal(evaluate(prog, X86_64, CLONE, flag | 17), 0x00050001, `clone(CLONE_${name}) gets EPERM`);
    assert.equal(evaluate(prog, X86_64, CLONE, flag | THREAD), 0x00050001, `a thread with CLONE_${name}`);
  }
  assert.equal(evaluate(prog, X86_64, 435), 0x00050026, 'clone3 gets ENOSYS');
});

test('the sandbox drops to the uid with no capabilities after unsharing everything', () => {
  const args = sandboxArgs({
    uid: 300_123,
    installRoot: '/opt/ocs',
    runDir: '/run/ocs/spaces/sp_x',
    dataDir: '/srv/x/data/space',
    nodePath: '/usr/bin/node',
    seccompFd: 3,
    argv: ['/usr/bin/node', 'main.js'],
  });
  for (const flag of ['--unshare-net', '--unshare-pid', '--unshare-ipc', '--die-with-parent', '--new-session'])
    assert.ok(args.includes(flag), flag);
  const sep = args.indexOf('--');
  assert.deepEqual(args.slice(sep + 1, sep + 8), [
    'setpriv',
    '--reuid=300123',
    '--regid=300123',
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
  ]);
  assert.ok(!args.includes('--bind') || args[args.indexOf('--bind') + 1] === '/run/ocs/spaces/sp_x');
});
