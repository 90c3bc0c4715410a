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
npm run build --silent

times=()
failed=()
tier() { # name, npm script
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
tier guest
printf '\n== test tiers\n'
printf '  %s\n' "${times[@]}"
[ ${#failed[@]} -eq 0 ] || { echo "failed tiers: ${failed[*]}" >&2; exit 1; }
