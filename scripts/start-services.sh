#!/usr/bin/env bash
# Starts the real services the node and its tests use, when they are not running yet.
# Machines here have no systemd as PID 1, so the daemons are started by hand and polled.
set -euo pipefail
LOG_DIR=${OCS_SERVICE_LOGS:-/var/log/ocs-services}
mkdir -p "$LOG_DIR"

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then echo "$what ready"; return 0; fi
    sleep 0.1
  done
  echo "$what did not become ready in ${secs}s" >&2
  return 1
}

docker_ping() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping; }
if ! docker_ping >/dev/null 2>&1; then
  # cgroupfs driver: this kernel has cgroup v1 and no systemd to delegate to.
  nohup dockerd --exec-opt native.cgroupdriver=cgroupfs >"$LOG_DIR/dockerd.log" 2>&1 &
fi
wait_for dockerd 60 docker_ping

if command -v libvirtd >/dev/null 2>&1; then
  pgrep -x virtlogd >/dev/null || virtlogd --daemon
  pgrep -x virtlockd >/dev/null || virtlockd --daemon
  pgrep -x libvirtd >/dev/null || libvirtd --daemon
  wait_for libvirtd 30 virsh -c qemu:///system version
fi
