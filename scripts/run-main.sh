#!/usr/bin/env bash
# The main job: set up the host, build smartvm, check the host and boot the built-in probe guest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p smartvm-cli
./target/release/smartvm doctor
./target/release/smartvm run
