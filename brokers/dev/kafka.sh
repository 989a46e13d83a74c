#!/usr/bin/env bash
# Runs a development Kafka-protocol broker (tansu, file-backed SQLite storage in ./kafka-data)
# on 127.0.0.1:9092 in the foreground. Builds tansu from crates.io into ~/.cache/tidegate-tools
# the first time (about 15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${TIDEGATE_TOOLS:-$HOME/.cache/tidegate-tools}"
PORT="${PORT:-9092}"
if ! command -v tansu >/dev/null 2>&1; then
  [ -x "$TOOLS/bin/tansu" ] ||
    cargo install --locked tansu --version 0.6.0 --features dynostore,libsql --root "$TOOLS"
  export PATH="$TOOLS/bin:$PATH"
fi
mkdir -p kafka-data
cd kafka-data   # tansu resolves the SQLite path against its working directory
exec tansu broker \
  --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "sqlite://tansu.db" "$@"
