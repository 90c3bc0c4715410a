/**
 * The production tier (issue 10): what our machines cannot run, run for real in the guest
 * scripts/guest/build.sh makes: systemd as PID 1, the unified cgroup v2 hierarchy, OpenZFS 2.3.
 *
 * Inside: the storage conformance suite (the one the fscrypt driver passes) on a real pool, and
 * the cgroup v2 driver's tests inside the group systemd delegated to the unit (`Delegate=yes`).
 * `OCS_REQUIRE_KERNEL=zfs,cgroup-v2` turns their "the kernel cannot" skips into failures, so
 * this passes only if they ran. Then the at-rest check on a pool of the guest's second disk,
 * read from the host once the guest has locked the space and exported the pool.
 * Last, the daemon as the systemd unit we ship (e2e/src/guest-node-service.ts).
 * Times go to the diagnostics (the closing note quotes them).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { buildBusyboxImage, rawContains } from '@ocs/host/testing';
import { buildGuest, runInGuest, type GuestImage, type GuestResult } from './guest.js';

let image: GuestImage;
const results: GuestResult[] = [];
after(() => results.forEach((r) => r.cleanup()));

test('the guest builds from Debian packages (or comes from its cache)', { timeout: 30 * 60_000 }, async (t) => {
  image = await buildGuest();
  t.diagnostic(`guest image ${image.dir} in ${image.seconds.toFixed(0)} s`);
});

test(
  'in the guest: the zfs driver passes storage conformance on a real pool; the cgroup v2 driver runs in the delegated group',
  { timeout: 45 * 60_000 },
  async (t) => {
    assert.ok(image, 'the guest was built');
    const r = await runInGuest(
      image,
      `set -eu
modprobe zfs
echo "zfs module $(cat /sys/module/zfs/version), $(zfs version | head -1)"
export OCS_REQUIRE_KERNEL=zfs,cgroup-v2 OCS_CGROUP2_ROOT="$OCS_GUEST_CGROUP"
node scripts/test.mjs host/dist/storage/zfs host/dist/cgroups/v2
`,
    );
    results.push(r);
    t.diagnostic(`guest ran ${r.seconds.toFixed(0)} s under ${r.accelerator}`);
    assert.equal(r.code, 0, `the suite failed in the guest:\n${r.log.slice(-8000)}`);
    assert.match(r.log, /zfs module 2\.3\./);
    assert.match(r.log, /storage conformance: zfs/);
    assert.match(r.log, /limits are written to cpu\.max, memory\.max, memory\.swap\.max, pids\.max and read back/);
    assert.match(r.log, /ℹ fail 0/);
    assert.match(r.log, /ℹ skipped 0/);
  },
);

test(
  'at rest on ZFS: once locked, neither the space nor its volume shows in the raw pool disk read from the host, and the dataset does not mount without the key',
  { timeout: 45 * 60_000 },
  async (t) => {
    assert.ok(image, 'the guest was built');
    const m = () => `OCS-MARKER-${randomBytes(16).toString('hex')}-END`;
    const [space, volume, control] = [m(), m(), m()];
    const r = await runInGuest(
      image,
      `set -eu
modprobe zfs
node e2e/dist/guest-zfs-at-rest.js /dev/disk/by-id/virtio-pool ${space} ${volume} ${control}
`,
      { disks: [{ name: 'pool', bytes: 512 * 1024 ** 2 }] },
    );
    results.push(r);
    t.diagnostic(`guest ran ${r.seconds.toFixed(0)} s`);
    assert.equal(r.code, 0, `the at-rest script failed in the guest:\n${r.log.slice(-8000)}`);
    const line = /AT-REST (\{.*\})/.exec(r.log);
    assert.ok(line, r.log);
    const got = JSON.parse(line[1]!) as { keystatus: string; mountWithoutKey: string };
    assert.equal(got.keystatus, 'unavailable');
    assert.match(got.mountWithoutKey, /encryption key not loaded/);
    const disk = r.disks.pool!;
    // The control: plaintext written to an unencrypted dataset of the same pool is on the disk.
    assert.equal(rawContains(disk, Buffer.from(control)), true, 'the control marker is on the raw disk');
    assert.equal(rawContains(disk, Buffer.from(space)), false, "the space's marker is on the raw disk");
    assert.equal(rawContains(disk, Buffer.from(volume)), false, "the volume's marker is on the raw disk");
  },
);

test(
  'the node as the systemd service we ship, on ZFS and cgroup v2: a space, its container and its data, locked (nothing on the raw pool disk), unlocked, destroyed',
  { timeout: 45 * 60_000 },
  async (t) => {
    assert.ok(image, 'the guest was built');
    const tar = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
    try {
      const r = await runInGuest(
        image,
        `set -eu
echo "guest up $(cut -d' ' -f1 /proc/uptime) s when the script began"
modprobe zfs
node e2e/dist/guest-node-service.js /dev/disk/by-id/virtio-pool /run/ocs-guest/busybox.tar
`,
        { disks: [{ name: 'pool', bytes: 512 * 1024 ** 2 }], files: { 'busybox.tar': tar } },
      );
      results.push(r);
      t.diagnostic(`guest ran ${r.seconds.toFixed(0)} s`);
      assert.equal(r.code, 0, `the service run failed in the guest:\n${r.log.slice(-12000)}`);
      const line = /NODE-SERVICE (\{.*\})/.exec(r.log);
      assert.ok(line, r.log);
      const got = JSON.parse(line[1]!) as { daemon: { cgroup: string }; seconds: Record<string, number> };
      assert.equal(got.daemon.cgroup, '/system.slice/ocs-node.service/daemon');
      t.diagnostic(`service run: ${JSON.stringify(got.seconds)}`);
    } finally {
      rmSync(dirname(tar), { recursive: true, force: true });
    }
  },
);
