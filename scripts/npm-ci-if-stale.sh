#!/usr/bin/env bash
# `npm ci`, unless node_modules is already what it would make: newer than the lockfile and its
# native addons (better-sqlite3, the libvirt binding) built for the Node that runs now. npm ci
# deletes node_modules first, so an install for another Node (the machine's 20, an older pin)
# is never reused by accident. Run after `. scripts/install-node.sh --env`.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.ocs-node-abi
want="$(node -p 'process.version + " abi " + process.versions.modules')"
if [ -d node_modules ] && [ node_modules -nt package-lock.json ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
npm ci --no-audit --no-fund
echo "$want" >"$stamp"
