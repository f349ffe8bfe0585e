#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up the host, then lint and test everything against the
# real Firecracker. SMARTVM_REQUIRE_KVM=1 turns "no /dev/kvm or Firecracker" skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SMARTVM_REQUIRE_KVM=1
# Tests that cannot run here say so in this file; the summary at the end lists them.
SMARTVM_SKIP_LOG="$(mktemp)"
export SMARTVM_SKIP_LOG
report_skipped() {
  echo "== skipped tests (cannot run on this host) =="
  if [ -s "$SMARTVM_SKIP_LOG" ]; then sort -u "$SMARTVM_SKIP_LOG"; else echo "none"; fi
  rm -f "$SMARTVM_SKIP_LOG"
}
trap report_skipped EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo test --workspace --no-fail-fast
# The lean library: without the images and network layers it builds and its tests pass.
cargo clippy -p smartvm --no-default-features --all-targets -q -- -D warnings
cargo test -p smartvm --no-default-features -q
# The guest agent as shipped: one static executable (no ELF interpreter), and its frame decoder
# fuzzed for a bounded time.
guest="$(scripts/build-guest.sh)"
if readelf -l "$guest" | grep -q INTERP; then echo "$guest is not static"; exit 1; fi
echo "smartvm-guest (static): $(stat -c %s "$guest") bytes"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" scripts/fuzz.sh
