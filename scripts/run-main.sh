#!/usr/bin/env bash
# The main job: set up the host, build smartvm, check the host and boot the built-in probe guest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p smartvm-cli
./target/release/smartvm doctor
./target/release/smartvm run
# The guest agent, built static, answering a command over a Unix socket (what it does inside a
# guest over vsock).
guest="$(scripts/build-guest.sh)"
sock="$(mktemp -u /tmp/smartvm-guest.XXXXXX.sock)"
"$guest" --listen "unix:$sock" &
agent=$!
trap 'kill $agent 2>/dev/null; rm -f "$sock"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
./target/release/smartvm exec --guest-socket "unix:$sock" -- uname -a
