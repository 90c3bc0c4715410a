/**
 * /dev/kvm for exactly one space uid: after a grant that uid opens the real device read-write,
 * another space's uid still cannot, and after the revoke neither can.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { KVM_DEVICE, grantKvm, kvmGrants, revokeKvm } from './kvm-access.js';

const skip =
  process.getuid?.() !== 0
    ? 'needs root'
    : !existsSync(KVM_DEVICE)
      ? 'this kernel has no /dev/kvm'
      : spawnSync('setfacl', ['--version']).status !== 0
        ? 'setfacl missing (apt-get install acl)'
        : false;

/** Whether `uid` (no groups, no capabilities) can open the device read-write. */
function opens(uid: number): boolean {
  const r = spawnSync('setpriv', [
    `--reuid=${uid}`,
    `--regid=${uid}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--',
    '/bin/sh',
    '-c',
    `exec 3<>${KVM_DEVICE}`,
  ]);
  return r.status === 0;
}

test('a grant opens /dev/kvm to that uid only; revoke closes it; both are idempotent', { skip }, async (t) => {
  const mine = 400_000 + randomInt(50_000);
  const other = mine + 1;
  t.after(async () => {
    await revokeKvm(mine);
    await revokeKvm(other);
  });
  assert.equal(opens(mine), false, 'control: no access before the grant');
  await grantKvm(mine);
  await grantKvm(mine);
  assert.equal(opens(mine), true);
  assert.equal(opens(other), false, "another space's uid gets nothing");
  assert.ok((await kvmGrants()).includes(mine));
  await revokeKvm(mine);
  await revokeKvm(mine);
  assert.equal(opens(mine), false);
  assert.ok(!(await kvmGrants()).includes(mine));
});

test('root and system uids are never granted', async () => {
  for (const uid of [0, 1, 999, -1, 1.5]) await assert.rejects(grantKvm(uid, '/nonexistent'), /refusing a KVM grant/);
});
