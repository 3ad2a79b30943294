#!/usr/bin/env bash
# Builds a Debian root file system holding Synapse (Debian sid's matrix-synapse
# package and its Python dependencies, psycopg2 included) into .tools/synapse-root,
# once. The tests and the demo run Synapse inside it (internal/testenv/synapse.go).
#
# Synapse is a Python program; Debian sid packages it with everything it needs,
# while the host's Debian release does not. mmdebstrap builds the root in about a
# minute. The build goes to a temporary folder that is renamed when complete, so
# an interrupted build never leaves a half root behind.
set -euo pipefail
cd "$(dirname "$0")/.."

root=${SYNAPSE_ROOT:-$PWD/.tools/synapse-root}
suite=${SYNAPSE_SUITE:-sid}

if [ -x "$root/usr/bin/python3" ] && [ -f "$root/.mxprobe-synapse-version" ]; then
  echo "Synapse root present: $root (matrix-synapse $(cat "$root/.mxprobe-synapse-version"))"
  exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mmdebstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  else
    echo "mmdebstrap is not installed and cannot be installed here (needs root and apt-get)." >&2
    echo "Install it (apt-get install mmdebstrap) or point the tests at no Synapse (MXPROBE_SKIP_INTEGRATION=1)." >&2
    exit 1
  fi
fi

mode=()
if [ "$(id -u)" != 0 ]; then
  # Without root, mmdebstrap builds in a user namespace where the kernel allows it.
  mode=(--mode=unshare)
fi

# A mount left inside a root (a crashed run outside a namespace) would make
# rm -rf delete the host's device nodes: refuse rather than delete.
mounted_under() { awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts; }

tmp="$root.build.$$"
mkdir -p "$(dirname "$root")"
for old in "$root".build.*; do
  [ -e "$old" ] || continue
  if [ -n "$(mounted_under "$old")" ]; then
    echo "refusing to remove $old: something is mounted inside it" >&2
    exit 1
  fi
  rm -rf "$old"
done
trap 'if [ -z "$(mounted_under "$tmp")" ]; then rm -rf "$tmp"; fi' EXIT

echo "building the Synapse root in $root (mmdebstrap, Debian $suite, about a minute)"
# Acquire::Check-Valid-Until: the archive may serve a sid Release file past its
# Valid-Until, which apt refuses otherwise.
mmdebstrap "${mode[@]}" --variant=apt --quiet \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --include=matrix-synapse,python3-psycopg2,ca-certificates \
  "$suite" "$tmp"

version=$(chroot "$tmp" dpkg-query -W -f '${Version}' matrix-synapse 2>/dev/null ||
  sed -n '/^Package: matrix-synapse$/,/^$/s/^Version: //p' "$tmp/var/lib/dpkg/status")
echo "$version" > "$tmp/.mxprobe-synapse-version"
# Free the space of downloaded packages; the root is only ever run.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages 2>/dev/null || true

if [ -e "$root" ]; then
  if [ -n "$(mounted_under "$root")" ]; then
    echo "refusing to replace $root: something is mounted inside it" >&2
    exit 1
  fi
  rm -rf "$root"
fi
mv "$tmp" "$root"
trap - EXIT
echo "Synapse root ready: $root (matrix-synapse $version)"
