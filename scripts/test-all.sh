#!/usr/bin/env bash
# The README's second command: on a fresh Debian 12 machine (root), install what is missing
# (Debian packages, the pinned Node.js, npm packages), start the services the tests use, build,
# and run the whole suite in its three tiers (docs/testing.md), printing each one's time:
#   unit   logic and in-process HTTP; no root, no host service      npm test
#   host   the real kernel, podman, dockerd, libvirt, the built daemon and CLI   npm run test:host
#   guest  ZFS, cgroup v2 and systemd in a Debian guest under QEMU  npm run test:guest
# .ci/run runs it too, after its lint steps. Every tier runs even when one before it failed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the tests use cgroups, loop devices, mounts, podman, dockerd and libvirtd" >&2; exit 1; }

bash scripts/install-host-deps.sh
. scripts/install-node.sh --env
# npm ci deletes node_modules and installs everything again: only when it is missing, older
# than the lockfile, or built for another Node (as in scripts/start-node.sh), so a second run,
# or the one in .ci/run right after its own npm step, does not spend minutes on it.
bash scripts/npm-ci-if-stale.sh
bash scripts/start-services.sh
# The guest tier's image (about 6 minutes cold, mostly dkms compiling ZFS; a lookup when cached)
# is built while the other tiers run, at the lowest CPU and I/O priority so it takes only what
# they leave. The guest tier waits for it.
guest_log=$(mktemp /tmp/ocs-guest-build.XXXXXX.log)
nice -n 19 ionice -c 3 bash scripts/guest/build.sh >"$guest_log" 2>&1 &
guest_build=$!
npm run build --silent

times=()
failed=()
tier() { # unit | host | guest
  local t0=$SECONDS
  printf '\n== test tier: %s\n' "$1"
  if node scripts/test.mjs --tier "$1"; then times+=("$1 $((SECONDS - t0)) s ok"); else
    times+=("$1 $((SECONDS - t0)) s FAILED")
    failed+=("$1")
  fi
}
# npm test is the unit tier (node scripts/test.mjs --tier unit, after the build done above).
tier unit
tier host
t0=$SECONDS
if wait "$guest_build"; then
  printf '\n== guest image: %s (waited %s s)\n' "$(tail -n 1 "$guest_log")" "$((SECONDS - t0))"
else
  printf '\n== guest image build failed (the guest tier builds it again and reports):\n' >&2
  tail -n 30 "$guest_log" >&2
fi
rm -f "$guest_log"
tier guest
printf '\n== test tiers\n'
printf '  %s\n' "${times[@]}"
[ ${#failed[@]} -eq 0 ] || { echo "failed tiers: ${failed[*]}" >&2; exit 1; }
