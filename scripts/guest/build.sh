#!/usr/bin/env bash
# Builds the production-like guest (issue 10), or finds it in its cache: a Debian bookworm root
# with systemd as PID 1 (unified cgroup v2), Debian's kernel, OpenZFS 2.3 from bookworm-backports
# contrib compiled by dkms for that kernel, and the project's pinned Node.js (scripts/install-node.sh,
# at the path a production node has it). Debian packages, and Node from the npm registry.
#
# The cache lives outside the clone ($OCS_GUEST_CACHE, default /var/cache/ocs-guest), keyed by the
# archive's candidate versions of what goes in, this script and the Node binary: a second build
# with nothing changed is a lookup. The project itself is not in the image: e2e/src/guest.ts shares
# the clone with the guest read-only, with the runner (scripts/guest/runner), so a new commit needs
# no new image.
#
# Prints the directory holding root.img, vmlinuz and initrd.img. Fails loudly when the archive is
# unreachable: the guest tier never passes without running.
set -euo pipefail
CACHE=${OCS_GUEST_CACHE:-/var/cache/ocs-guest}
MIRROR=${OCS_GUEST_MIRROR:-http://deb.debian.org/debian}
SECURITY=${OCS_GUEST_SECURITY:-http://deb.debian.org/debian-security}
# The pinned runtime (installed here if missing), copied into the image at the same path.
NODE_DIR=$(bash "$(dirname "$0")/../install-node.sh")
NODE=$NODE_DIR/bin/node
log() { printf '[guest build %ss] %s\n' "$SECONDS" "$*" >&2; }

# Which versions the archive offers now, asked of an apt of our own: the host's sources stay as
# they are (main only), and backports is never pinned above bookworm.
apt_dir=$CACHE/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
# One build at a time per cache: .ci/run starts one early in the background; a second caller
# (scripts/test-all.sh, the guest tier) waits for it here and then finds the image cached.
exec 9>"$CACHE/.build.lock"
flock 9
cat >"$apt_dir/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
deb $MIRROR bookworm-backports main contrib
SOURCES
APT=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
apt-get "${APT[@]}" -qq update
candidate() { apt-cache "${APT[@]}" policy "$1" | awk '/Candidate:/ { print $2 }'; }
backport() { apt-cache "${APT[@]}" madison "$1" | awk '$6 ~ /^bookworm-backports\// { print $3; exit }'; }
versions="linux-image-amd64=$(candidate linux-image-amd64)
linux-headers-amd64=$(candidate linux-headers-amd64)
systemd=$(candidate systemd)
zfs-dkms=$(backport zfs-dkms)
zfsutils-linux=$(backport zfsutils-linux)"
# What the node daemon runs with (as scripts/install-host-deps.sh installs on a host): podman per
# space with its runtime, the space process's sandbox, the spaces' firewall (nftables; iptables
# for dockerd's chain), the test image's busybox.
NODE_PKGS=(podman catatonit runc conmon containernetworking-plugins fuse-overlayfs nftables iptables iproute2 procps bubblewrap openssl busybox-static)
for p in "${NODE_PKGS[@]}"; do versions+=$'\n'"$p=$(candidate "$p")"; done
if grep -qE '=(\(none\))?$' <<<"$versions"; then
  printf '%s\n' "$versions" >&2
  log "the archive does not offer every package the guest needs"
  exit 1
fi
key=$( { printf '%s\n' "$versions"; cat "$0"; sha256sum "$NODE"; } | sha256sum | cut -c1-16)
out=$CACHE/guest-$key
if [[ -f $out/ready ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

log "building $out"
printf '%s\n' "$versions" | sed 's/^/  /' >&2
command -v debootstrap >/dev/null || { log "debootstrap is not installed (scripts/install-host-deps.sh)"; exit 1; }
work=$(mktemp -d "$CACHE/build-XXXXXX")
root=$work/root
cleanup() {
  for m in dev/pts dev proc sys; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,ca-certificates,libstdc++6,util-linux,e2fsprogs \
  bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
log "debootstrap done"
cp "$apt_dir/sources.list" "$root/etc/apt/sources.list"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
in_root() { chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
in_root apt-get -qq update
pin() { grep "^$1=" <<<"$versions" | cut -d= -f2-; }
in_root apt-get -y -qq --no-install-recommends install \
  "linux-image-amd64=$(pin linux-image-amd64)" "linux-headers-amd64=$(pin linux-headers-amd64)" >"$work/kernel.log" 2>&1 ||
  { tail -20 "$work/kernel.log" >&2; exit 1; }
log "kernel installed"
# dkms compiles spl.ko and zfs.ko for the kernel just installed (not for the host's).
in_root apt-get -y -qq --no-install-recommends -t bookworm-backports install \
  "zfs-dkms=$(pin zfs-dkms)" "zfsutils-linux=$(pin zfsutils-linux)" >"$work/zfs.log" 2>&1 ||
  { tail -30 "$work/zfs.log" >&2; exit 1; }
kver=$(ls "$root/lib/modules")
[[ -n $(find "$root/lib/modules/$kver" -name 'zfs.ko*' -print -quit) ]] || { log "dkms built no zfs.ko for $kver"; exit 1; }
log "zfs built for $kver"
in_root apt-get -y -qq --no-install-recommends install $(for p in "${NODE_PKGS[@]}"; do echo "$p=$(pin "$p")"; done) \
  >"$work/node-deps.log" 2>&1 || { tail -20 "$work/node-deps.log" >&2; exit 1; }
log "the daemon's packages installed"
in_root apt-get -qq clean

# systemd boots with the unified hierarchy (bookworm's default). The image holds only a fixed
# bootstrap: it mounts the run's share and runs the runner e2e/src/guest.ts put there (scripts/guest/runner),
# so changing the runner needs no new image.
mkdir -p "$root/usr/local/lib/ocs"
cp -a "$NODE_DIR" "$root$NODE_DIR"
ln -sfn "$(basename "$NODE_DIR")" "$root/usr/local/lib/ocs/node"
ln -sfn /usr/local/lib/ocs/node/bin/node "$root/usr/local/bin/node"
cat >"$root/usr/local/sbin/ocs-guest-run" <<'BOOT'
#!/bin/sh
mkdir -p /run/ocs-guest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 ocs-out /run/ocs-guest || exit 1
exec /bin/bash /run/ocs-guest/runner
BOOT
chmod 0755 "$root/usr/local/sbin/ocs-guest-run"
# Delegate=yes: the runner's cgroup is its own to subdivide, as the node daemon's is in
# packaging/systemd; nothing in it writes the root's cgroup.subtree_control.
cat >"$root/etc/systemd/system/ocs-guest-run.service" <<'UNIT'
[Unit]
Description=Run what the host shared with this guest, then power off
After=local-fs.target systemd-modules-load.service
Wants=local-fs.target

[Service]
Type=oneshot
Delegate=yes
ExecStart=/usr/local/sbin/ocs-guest-run
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable ocs-guest-run.service >/dev/null 2>&1
in_root systemctl mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1
# What starts at boot and competes with the run for the emulated CPUs, and nothing the daemon
# uses (it runs a podman service per space of its own): podman's boot-time restarts and its
# API socket, the consoles, apt's and e2scrub's timers.
in_root systemctl mask podman.socket podman-restart.service podman-auto-update.timer podman-auto-update.service \
  getty-static.service e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
echo ocs-guest >"$root/etc/hostname"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
for m in dev/pts dev proc sys; do umount -l "$root/$m"; done

cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
truncate -s 4G "$work/root.img"
mkfs.ext4 -q -L ocs-root -d "$root" "$work/root.img"
printf '%s\nkernel=%s\n' "$versions" "$kver" >"$work/versions"
rm -rf "$root"
mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/root.img" "$work/versions" "$out/"
touch "$out/ready"
log "built $out"
echo "$out"
