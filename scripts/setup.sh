#!/usr/bin/env bash
# Installs what smartvm's build and tests need on a fresh Debian machine (idempotent, quick when
# everything is present): host tools from apt, then the Firecracker binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v nft >/dev/null || need+=(nftables)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v cc >/dev/null || need+=(gcc)
# The containerd shim tests start their own containerd (never a system one).
command -v containerd >/dev/null || need+=(containerd)
# The CRI client of the shim tests (k8s-cri) compiles its protos with protoc.
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v script >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another apt (unattended-upgrades on a fresh machine) may hold the lock: wait for it.
  lock=(-o DPkg::Lock::Timeout=600)
  apt-get "${lock[@]}" update -qq
  apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
scripts/install-firecracker.sh >/dev/null
