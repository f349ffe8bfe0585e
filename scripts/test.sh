#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up the host, then lint and test everything against the
# real Firecracker. SMARTVM_REQUIRE_KVM=1 turns "no /dev/kvm or Firecracker" skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SMARTVM_REQUIRE_KVM=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo test --workspace
# The lean library: without the images and network layers it builds and its tests pass.
cargo clippy -p smartvm --no-default-features --all-targets -q -- -D warnings
cargo test -p smartvm --no-default-features -q
