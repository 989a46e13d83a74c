#!/usr/bin/env bash
# Ingress fuzzing: COUNT randomized and mutated CloudEvents requests (binary, structured,
# batch, random bytes, odd methods/paths/hosts, chunked and broken framing, protocol oddities)
# against POST /default/default over raw sockets (bench/fuzz_ingress.py, deterministic for a
# SEED), then VALID well-formed events that must reach a subscriber (`tidegate sample-service`
# behind a Trigger). Prints counts per status and per generator kind; exit 1 on any 5xx other
# than 503 + Retry-After, if the gateway died, or if a valid event is refused or not delivered.
#   TIDEGATE_BIN=/path/to/tidegate SEED=7 COUNT=5000 bash bench/fuzz_ingress.sh
# The gateway runs with --max-body-bytes 262144 and --body-read-timeout 1s so that oversized
# and stalled bodies are cheap to exercise. Loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
TIDEGATE=${TIDEGATE_BIN:-target/release/tidegate}
COUNT=${COUNT:-5000}
SEED=${SEED:-20261125}
VALID=${VALID:-20}
DELIVERY_WAIT=${DELIVERY_WAIT:-60}
HELPER=$PWD/bench/fuzz_ingress.py
source bench/lib.sh

INGRESS=$(port); ADMIN=$(port); SUB_PORT=$(port)
"$TIDEGATE" sample-service --listen 127.0.0.1:$SUB_PORT >"$WORK/subscriber.log" 2>&1 &
SUB=$!; PIDS+=($SUB)
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/fuzz.yaml" <<YAML
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: fuzzsink, namespace: default}
spec:
  broker: default
  subscriber:
    uri: http://127.0.0.1:$SUB_PORT/
  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT0.1S
    timeout: PT5S
YAML
RUST_LOG=${RUST_LOG:-warn} "$TIDEGATE" serve --manifests "$WORK/manifests" --data-dir "$WORK/data" \
  --listen 127.0.0.1:$INGRESS --admin-listen 127.0.0.1:$ADMIN \
  --max-body-bytes 262144 --body-read-timeout 1s >"$WORK/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
ok=""
for _ in $(seq 1 300); do
  curl -sf -o /dev/null --max-time 1 127.0.0.1:$ADMIN/readyz && curl -sf -o /dev/null --max-time 1 127.0.0.1:$SUB_PORT/events && { ok=1; break; }
  kill -0 $GW 2>/dev/null || break
  sleep 0.1
done
[ -n "$ok" ] || { echo "gateway or subscriber not ready"; tail -n 30 "$WORK/gateway.log"; exit 1; }
echo "fuzz ingress: $COUNT requests, seed $SEED; binary $TIDEGATE"
echo "ingress 127.0.0.1:$INGRESS admin 127.0.0.1:$ADMIN subscriber 127.0.0.1:$SUB_PORT; gateway RSS $(rss_kib $GW) KiB"

python3 "$HELPER" fuzz $INGRESS "$COUNT" "$SEED" "$WORK/fuzz.json"
ALIVE=no
if kill -0 $GW 2>/dev/null && curl -sf -o /dev/null --max-time 5 127.0.0.1:$ADMIN/healthz; then ALIVE=yes; fi
echo "  after fuzzing: gateway alive=$ALIVE RSS $(rss_kib $GW) KiB"
python3 "$HELPER" valid $INGRESS "$VALID" "valid-$SEED" "http://127.0.0.1:$SUB_PORT" "$DELIVERY_WAIT" "$WORK/valid.json" \
  || echo '{"published": 0, "accepted": 0, "statuses": {"error": 1}, "missing": ["all"], "waited": 0, "subscriber_events": 0}' > "$WORK/valid.json"
kill -0 $GW 2>/dev/null || ALIVE=no
INGESTED=$(curl -s --max-time 2 127.0.0.1:$ADMIN/metrics | awk '/^tidegate_ingest_events_total/ {s+=$2} END {print s+0}' || echo "?")
TRIGGER=$(curl -s --max-time 2 127.0.0.1:$ADMIN/api/v1/triggers | python3 -c 'import json,sys; t=[x for x in json.load(sys.stdin) if x["name"]=="fuzzsink"][0]; print(" ".join(f"{k}={t[k]}" for k in ("delivered","retried","dead_lettered","dropped","in_flight","pending") if k in t))' 2>/dev/null || echo "?")
status=0
python3 "$HELPER" summary "$WORK/fuzz.json" "$WORK/valid.json" "$ALIVE" "$INGESTED" "$TRIGGER" || status=$?
if [ -n "${FUZZ_SAVE:-}" ]; then cp "$WORK/fuzz.json" "$FUZZ_SAVE"; echo "  raw results saved to $FUZZ_SAVE"; fi
if [ $status -ne 0 ]; then echo "gateway log tail:"; tail -n 20 "$WORK/gateway.log" || true; fi
exit $status
