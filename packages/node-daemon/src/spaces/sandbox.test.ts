import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DENIED_SYSCALLS, sandboxArgs, seccompProgram } from './sandbox.js';

/** Runs the classic-BPF program the way the kernel would, for one (arch, nr). */
function evaluate(prog: Buffer, arch: number, nr: number): number {
  let acc = 0;
  for (let pc = 0; pc < prog.length / 8;) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog.readUInt8(pc * 8 + 2);
    const jf = prog.readUInt8(pc * 8 + 3);
    const k = prog.readUInt32LE(pc * 8 + 4);
    if (code === 0x20) acc = k === 4 ? arch : k === 0 ? nr : NaN;
    else if (code === 0x15) pc += acc === k ? jt : jf;
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
  for (const nr of [0, 1, 2, 3, 9, 56, 57, 59, 60, 231, 257, 435]) assert.equal(evaluate(prog, X86_64, nr), 0x7fff0000);
  assert.equal(evaluate(prog, X86_64, 0x40000000 + 1), 0x00050001, 'x32 calls');
  assert.equal(evaluate(prog, 0x40000003, 1), 0x80000000, 'i386 is killed');
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
