import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hidesProcesses, parseProcMount } from './procfs.js';

const line = (super_: string, point = '/proc', type = 'proc') =>
  `22 27 0:21 / ${point} rw,relatime shared:12 - ${type} proc ${super_}`;

test('the procfs at /proc and its hidepid, as the kernel prints them', () => {
  assert.deepEqual(parseProcMount([line('rw'), line('rw', '/sys', 'sysfs')].join('\n')), {
    hidepid: 'off',
    gid: undefined,
  });
  assert.deepEqual(parseProcMount(line('rw,hidepid=invisible')), { hidepid: 'invisible', gid: undefined });
  assert.deepEqual(parseProcMount(line('rw,gid=110,hidepid=invisible')), { hidepid: 'invisible', gid: 110 });
  // Numbers, as kernels before 5.8 print them.
  assert.equal(parseProcMount(line('rw,hidepid=2'))?.hidepid, 'invisible');
  assert.equal(parseProcMount(line('rw,hidepid=1'))?.hidepid, 'noaccess');
  // Another procfs elsewhere (a container's, a chroot's) is not the host's /proc.
  assert.equal(parseProcMount(line('rw,hidepid=invisible', '/srv/chroot/proc')), undefined);
  // Two mounts at /proc: the last one is what a lookup reaches.
  assert.equal(parseProcMount([line('rw'), line('rw,hidepid=ptraceable')].join('\n'))?.hidepid, 'ptraceable');
});

test('only invisible and ptraceable hide other users’ processes from a local account', () => {
  for (const [hidepid, hides] of [
    ['off', false],
    ['noaccess', false],
    ['invisible', true],
    ['ptraceable', true],
  ] as const)
    assert.equal(hidesProcesses({ hidepid, gid: undefined }), hides, hidepid);
  assert.equal(hidesProcesses(undefined), false);
});
