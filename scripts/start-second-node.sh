#!/usr/bin/env bash
# A second development node on this machine (root), beside the one scripts/start-node.sh
# started: what lets two daemons share a machine is that each has its own state and run
# directories, port, storage root, cgroup parent, uid range, subordinate ids, subnets and
# published ports. For trying what goes from node to node (ocs space move) on one machine.
# Stop it with: kill "$(cat /run/ocs/ocs-node-b.pid)".
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the node daemon manages cgroups, loop devices and mounts" >&2; exit 1; }

STATE_DIR=${OCS_STATE_DIR:-/var/lib/ocs-b}
CONFIG=$STATE_DIR/config.json
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
# It takes the first node's drains (docs/operator-guide.md, "Retire a node"): its identity key,
# raw and base64url as GET /v1/node shows it, listed as a peer.
PEERS=""
FIRST_IDENTITY=${OCS_FIRST_STATE_DIR:-/var/lib/ocs}/keys/identity.pem
if [ -f "$FIRST_IDENTITY" ]; then
  PEERS="\"$(openssl pkey -in "$FIRST_IDENTITY" -pubout -outform DER | tail -c 32 | base64 | tr '+/' '-_' | tr -d '=')\""
fi
if [ ! -f "$CONFIG" ]; then
  # None of it overlaps the first node's defaults (docs/operator-guide.md): uids 200000-299999,
  # subordinate ids from 1000000000, 10.128.0.0/9, ports 30000-30999 and 8443. A development
  # node, like the first: its own issuer mints its tokens (ocs token --state-dir $STATE_DIR).
  cat > "$CONFIG" <<JSON
{
  "listen": { "host": "0.0.0.0", "port": 8444 },
  "runDir": "/run/ocs-b",
  "storage": { "backend": "fscrypt", "root": "/var/lib/ocs-b-storage" },
  "cgroups": { "parent": "ocs-b.slice" },
  "spaces": { "uidBase": 400000, "uidCount": 1000 },
  "workloads": {
    "containers": { "subidBase": 500000000, "subnetPool": "10.96.0.0/12" },
    "network": { "ports": { "first": 31000, "last": 31999 } }
  },
  "moves": { "peers": [$PEERS] },
  "auth": { "devIssuer": true }
}
JSON
fi
OCS_NODE_NAME=ocs-node-b OCS_NODE_ADD_AS=b OCS_STATE_DIR="$STATE_DIR" OCS_CONFIG="$CONFIG" exec bash scripts/start-node.sh
