/**
 * Lets exactly one uid open /dev/kvm: QEMU runs as a space's own uid (not libvirt's shared
 * QEMU user, which is in the `kvm` group), so under KVM that uid needs the device and nothing
 * else. A POSIX ACL entry per uid does that without a shared group, which would also be the
 * group of every file QEMU creates for every space. The entry goes with the space's last VM.
 */
import { run, type Runner } from '../exec.js';

export const KVM_DEVICE = '/dev/kvm';

function checkUid(uid: number): void {
  // Never root, never a system account: only the per-space ranges the daemon hands out.
  if (!Number.isSafeInteger(uid) || uid < 1000 || uid > 0xfffffffe)
    throw new Error(`refusing a KVM grant for uid ${uid}`);
}

/** Adds `u:<uid>:rw` to the device's ACL (idempotent). */
export async function grantKvm(uid: number, device = KVM_DEVICE, runner: Runner = run): Promise<void> {
  checkUid(uid);
  await runner('setfacl', ['-m', `u:${uid}:rw`, device]);
}

/** Removes the uid's entry (idempotent: no entry is not an error). */
export async function revokeKvm(uid: number, device = KVM_DEVICE, runner: Runner = run): Promise<void> {
  checkUid(uid);
  await runner('setfacl', ['-x', `u:${uid}`, device]).catch(async (err: unknown) => {
    if (!(await kvmGrants(device, runner)).includes(uid)) return;
    throw err;
  });
}

/** The uids that have an entry of their own on the device. */
export async function kvmGrants(device = KVM_DEVICE, runner: Runner = run): Promise<number[]> {
  const { stdout } = await runner('getfacl', ['--numeric', '--omit-header', '--absolute-names', device]);
  return [...stdout.matchAll(/^user:(\d+):/gm)].map((m) => Number(m[1]));
}
