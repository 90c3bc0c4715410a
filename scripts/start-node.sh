#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (root), install what is missing,
# build, start the services a node uses, and start a development node daemon in the background
# with embedded defaults. Prints how to reach it. Stop it with: kill "$(cat /run/ocs/ocs-node.pid)".
# OCS_NODE_NAME (default ocs-node) names its pid and log files, OCS_STATE_DIR its state and
# OCS_CONFIG its config, OCS_NODE_ADD_AS the name it suggests to `ocs node add`:
# scripts/start-second-node.sh starts a second node this way.
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
NAME=${OCS_NODE_NAME:-ocs-node}
PID=/run/ocs/$NAME.pid
OUT=/var/log/ocs/$NAME.out
LOG=/var/log/ocs/$NAME.log
mkdir -p /run/ocs /var/log/ocs
if [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; then
  echo "a node daemon is already running (pid $(cat "$PID"))"
  exit 0
fi
nohup node packages/node-daemon/dist/main.js start --state-dir "$STATE_DIR" ${OCS_CONFIG:+--config "$OCS_CONFIG"} \
  >"$OUT" 2>"$LOG" &
echo $! > "$PID"
# Up to 2 minutes: the first start boots the guest kernel to decide between KVM and TCG.
for _ in $(seq 1 1200); do
  if grep -q '^  url:' "$OUT" 2>/dev/null; then
    cat "$OUT"
    url=$(awk '/^  url:/ { print $2 }' "$OUT" | sed 's/127\.0\.0\.1/localhost/')
    echo "  logs:            $LOG (JSON)"
    echo "  try:             export OCS_TOKEN=\$(ocs token --state-dir $STATE_DIR); ocs node add ${OCS_NODE_ADD_AS:-dev} $url --yes; ocs node info"
    exit 0
  fi
  if ! kill -0 "$(cat "$PID")" 2>/dev/null; then
    echo "the node daemon exited:" >&2
    tail -20 "$LOG" >&2
    exit 1
  fi
  sleep 0.1
done
echo "the node daemon did not come up in 120 s; see $LOG" >&2
exit 1
