#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (root), install what is missing,
# build, start the services a node uses, and start a development node daemon in the background
# with embedded defaults. Prints how to reach it. Stop it with: kill "$(cat /run/ocs/ocs-node.pid)".
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the node daemon manages cgroups, loop devices and mounts" >&2; exit 1; }

bash scripts/install-host-deps.sh
. scripts/install-node.sh --env
bash scripts/npm-ci-if-stale.sh
npm run build --silent
bash scripts/start-services.sh
# `ocs` on PATH: a wrapper around this checkout's build on the pinned Node (docs/cli.md).
printf '#!/bin/sh\nexec %s %s/packages/cli/dist/main.js "$@"\n' "$OCS_NODE_DIR/bin/node" "$(pwd)" > /usr/local/bin/ocs
chmod 755 /usr/local/bin/ocs

STATE_DIR=${OCS_STATE_DIR:-/var/lib/ocs}
mkdir -p /run/ocs /var/log/ocs
if [ -f /run/ocs/ocs-node.pid ] && kill -0 "$(cat /run/ocs/ocs-node.pid)" 2>/dev/null; then
  echo "a node daemon is already running (pid $(cat /run/ocs/ocs-node.pid))"
  exit 0
fi
nohup node packages/node-daemon/dist/main.js start --state-dir "$STATE_DIR" ${OCS_CONFIG:+--config "$OCS_CONFIG"} \
  >/var/log/ocs/ocs-node.out 2>/var/log/ocs/ocs-node.log &
echo $! > /run/ocs/ocs-node.pid
# Up to 2 minutes: the first start boots the guest kernel to decide between KVM and TCG.
for _ in $(seq 1 1200); do
  if grep -q '^  url:' /var/log/ocs/ocs-node.out 2>/dev/null; then
    cat /var/log/ocs/ocs-node.out
    echo "  logs:            /var/log/ocs/ocs-node.log (JSON)"
    echo "  try:             export OCS_TOKEN=\$(ocs token --state-dir $STATE_DIR); ocs node add dev https://localhost:8443 --yes; ocs node info"
    exit 0
  fi
  if ! kill -0 "$(cat /run/ocs/ocs-node.pid)" 2>/dev/null; then
    echo "the node daemon exited:" >&2
    tail -20 /var/log/ocs/ocs-node.log >&2
    exit 1
  fi
  sleep 0.1
done
echo "the node daemon did not come up in 120 s; see /var/log/ocs/ocs-node.log" >&2
exit 1
