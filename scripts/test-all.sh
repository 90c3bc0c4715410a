#!/usr/bin/env bash
# The README's second command: on a fresh Debian 12 machine (root), install what is missing,
# start the services the tests use, build, and run the whole test suite (unit, in-process
# HTTP, and end-to-end against the real kernel). .ci/run runs it too, after its lint steps.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the tests use cgroups, loop devices, mounts, podman, dockerd and libvirtd" >&2; exit 1; }

bash scripts/install-host-deps.sh
# npm ci deletes node_modules and installs everything again: only when it is missing or older
# than the lockfile (as in scripts/start-node.sh), so a second run, or the one in .ci/run right
# after its own npm step, does not spend minutes on it.
[ -d node_modules ] && [ node_modules -nt package-lock.json ] || npm ci --no-audit --no-fund
bash scripts/start-services.sh
npm test
