#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: system packages, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
