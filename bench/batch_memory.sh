#!/usr/bin/env bash
# Gateway RSS with 48 concurrent 4 MiB batches (release build). Env: CONCURRENCY, BODY_BYTES,
# EVENT_DATA (bytes of data per event), EXTRA_ARGS (flags for `tidegate serve`), TIDEGATE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TIDEGATE_BIN:-}" ]; then
  cargo build --release --bin tidegate
fi
exec python3 bench/batch_memory.py
