#!/usr/bin/env bash
# README's test command: installs what the tests need, then runs every test once, in one
# build profile (dev), formatting and lints included.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo-nextest && ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; falling back to cargo test" >&2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
