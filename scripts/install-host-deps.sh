#!/usr/bin/env bash
# Installs the Debian packages the node and its tests use. Idempotent; quiet when all are there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  age                     
  openssh-client          
  openssl
  fscrypt e2fsprogs util-linux bsdutils acl bubblewrap
  docker.io podman catatonit fuse-overlayfs   # fuse-overlayfs: container layers on ZFS (podman 4.3)
  busybox-static          
  libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 qemu-utils linux-image-amd64 
  iproute2 nftables procps psmisc curl   # nftables: the spaces' firewall (packages/host/src/network)
  chromium                # the SDK's signing code, tested in a headless browser
  debootstrap             # the production-like guest (scripts/guest/build.sh)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "host packages ready"
