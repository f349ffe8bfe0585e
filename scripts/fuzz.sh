#!/usr/bin/env bash
# Fuzzes the guest protocol's frame decoder and message parsers (cargo fuzz, libFuzzer) for a
# bounded time: FUZZ_SECONDS (default 30). Needs a nightly toolchain; installs cargo-fuzz when
# missing. Without nightly it says so and exits 0 (the stable decoder tests still run).
set -euo pipefail
cd "$(dirname "$0")/../crates/smartvm-guest-protocol"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "SKIPPED fuzzing: no nightly toolchain on this machine (cargo fuzz needs one)"
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
cargo +nightly fuzz run frame_decoder -- -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 2>&1 |
    grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY|thread)" || true
# A crash leaves an artifact: fail on it.
if compgen -G "fuzz/artifacts/frame_decoder/*" >/dev/null; then
    echo "the fuzzer found crashing inputs:"; ls fuzz/artifacts/frame_decoder
    exit 1
fi
