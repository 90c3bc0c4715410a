/**
 * Skips for missing services, made honest: a test of podman, dockerd, libvirtd or QEMU may skip on a
 * developer's machine that lacks them, but under CI (`OCS_REQUIRE_HOST=1`, set by .ci/run) a
 * missing service fails the run instead of turning its tests green. Skips for what the kernel
 * cannot do (cgroup v2 controllers, ZFS) do not go through here: they stay skips, and say so.
 */

/** True when a missing host service must fail the tests (CI). */
export function hostRequired(): boolean {
  return process.env.OCS_REQUIRE_HOST === '1';
}

/**
 * `why` is false when `what` is usable, or the reason it is not. Returns the value for a test's
 * `skip` option; throws (failing the test file) when the host is required.
 */
export function requireHost(what: string, why: string | false): string | false {
  // The unit tier (scripts/test.mjs) runs without root and without host services: a file there
  // that needs one is in the wrong tier, whether or not this machine has the service.
  if (process.env.OCS_TEST_TIER === 'unit')
    throw new Error(`${what} is a host service and this file runs in the unit tier: name it *.host.test.ts`);
  if (why === false) return false;
  if (hostRequired()) throw new Error(`OCS_REQUIRE_HOST=1 but ${what} is not usable here: ${why}`);
  return `${why} (set OCS_REQUIRE_HOST=1 to make this a failure)`;
}

/**
 * For what the kernel cannot do (ZFS, cgroup v2 controllers): a skip that says so, except
 * where the run names the feature in `OCS_REQUIRE_KERNEL` (comma-separated; the production
 * guest sets `zfs,cgroup-v2`), which is there to prove it can: then the missing feature fails.
 */
export function kernelSkip(feature: 'zfs' | 'cgroup-v2', why: string): string {
  const required = (process.env.OCS_REQUIRE_KERNEL ?? '').split(',').map((s) => s.trim());
  if (required.includes(feature)) throw new Error(`OCS_REQUIRE_KERNEL names ${feature}, but ${why}`);
  return why;
}
