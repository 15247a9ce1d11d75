#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: system packages, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean clone gains nothing from incremental compilation; its files only fill the disk.
export CARGO_INCREMENTAL=0
scripts/setup.sh --tests
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The API against its OpenAPI document: schemathesis --checks all, bounded examples, fixed seed.
scripts/schemathesis.sh
# The benchmark, at tiny sizes on the debug build: that every row still runs (not how fast).
scripts/bench.sh --smoke
# Every process a test starts is ended by a guard (also on panic); anything still running now is a
# leak: git daemons, servers or browsers of a test's temporary directory, a sandbox or a server's
# spawner. Zombies are not running (one whose parent was killed waits for this machine's init).
left=$(pgrep -r D,R,S,T,t,I -af -- 'git-daemon .*--base-path=/tmp/|jobpack (serve|worker) .*--data-dir /tmp/|jobpack-sandbox-init|jobpack-spawner|chromedriver --port=' || true)
if [ -n "$left" ]; then
  echo "test.sh: the tests left processes running:" >&2
  echo "$left" >&2
  exit 1
fi
echo "test.sh: no test process is left running"
