#!/usr/bin/env bash
# Writes jobpack-server/link-order.txt: the order of the release binary's functions (those the
# server runs as it starts, then a job's, then `jobpack run`'s and `pack`'s), which
# jobpack-server/build.rs hands to the linker. Run it as root (it turns the disk's readahead off
# for a few seconds, and starts sandboxes) after a change of toolchain, dependencies or much code:
# a stale list only leaves more of the binary's code resident (BENCHMARKS.md, "code layout").
set -euo pipefail
cd "$(dirname "$0")/.."
# Built without a list, so that the functions' first layout is the compiler's own.
JOBPACK_LINK_ORDER=0 cargo build -q --locked --release -p jobpack-server --bin jobpack
bin=$(mktemp /tmp/jobpack-link-order.XXXXXX)
trap 'rm -f "$bin"' EXIT
cp target/release/jobpack "$bin"
chmod 755 "$bin"
python3 scripts/link_order.py "$bin" jobpack-server/link-order.txt
# The list takes effect at the next release build (build.rs reruns when the file changes).
echo "link-order.sh: wrote jobpack-server/link-order.txt ($(grep -vc '^#' jobpack-server/link-order.txt) functions)"
