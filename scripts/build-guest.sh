#!/usr/bin/env bash
# Builds `smartvm-guest` as one static executable (no runtime dependencies: it runs as PID 1 of
# any Linux rootfs). Prints the binary's path.
#
#   scripts/build-guest.sh                 # x86_64, static glibc (the only target this host has)
#   TARGET=x86_64-unknown-linux-musl scripts/build-guest.sh
#   TARGET=aarch64-unknown-linux-musl scripts/build-guest.sh
#
# Other targets need `rustup target add $TARGET` first, and for aarch64 a linker:
# CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc (Debian:
# gcc-aarch64-linux-gnu). musl targets are static by default; the flag below makes glibc ones
# static too. With --target set, RUSTFLAGS reach only the agent, not build scripts or macros.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${TARGET:-$(rustc -vV | sed -n 's/^host: //p')}"
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
cargo build --quiet --profile guest -p smartvm-guest --target "$TARGET" --target-dir target/guest
echo "target/guest/$TARGET/guest/smartvm-guest"
