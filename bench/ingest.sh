#!/usr/bin/env bash
# Event path benchmark (release build): tidegate publish→subscriber vs the direct-HTTP ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ingest
