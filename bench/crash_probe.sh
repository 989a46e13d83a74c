#!/usr/bin/env bash
# Crash probe: nothing answered 202 is lost across `kill -9` of the gateway and a subscriber
# outage. A Broker and a Trigger (retry 20, linear, PT0.05S) deliver to a Python subscriber
# that appends every received ce-id to a file (bench/crash_probe.py). COUNT numbered binary
# CloudEvents are published at RATE/s; during the run the gateway is killed with SIGKILL
# KILLS times at random moments (restarted on the same data dir and ports) and the subscriber
# is down for OUTAGE seconds once. Then waits up to TAIL_WAIT s for every accepted id.
# Prints published / accepted / delivered unique / lost / duplicates; exit 1 if lost > 0.
#   TIDEGATE_BIN=/path/to/tidegate SEED=42 bash bench/crash_probe.sh
# Loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
TIDEGATE=${TIDEGATE_BIN:-target/release/tidegate}
COUNT=${COUNT:-3000}
RATE=${RATE:-200}
KILLS=${KILLS:-3}
OUTAGE=${OUTAGE:-5}
TAIL_WAIT=${TAIL_WAIT:-60}
SEED=${SEED:-$RANDOM}
HELPER=$PWD/bench/crash_probe.py
source bench/lib.sh
now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[1])-float(sys.argv[2]):.2f}')" "$(now)" "$1"; }

INGRESS=$(port); ADMIN=$(port); SUB_PORT=$(port)
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/probe.yaml" <<YAML
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: prober, namespace: default}
spec:
  broker: default
  subscriber:
    uri: http://127.0.0.1:$SUB_PORT/
  delivery:
    retry: 20
    backoffPolicy: linear
    backoffDelay: PT0.05S
YAML

start_gateway() {
  RUST_LOG=${RUST_LOG:-warn} "$TIDEGATE" serve --manifests "$WORK/manifests" --data-dir "$WORK/data" \
    --listen 127.0.0.1:$INGRESS --admin-listen 127.0.0.1:$ADMIN >>"$WORK/gateway.log" 2>&1 &
  GW=$!; PIDS+=($GW)
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null --max-time 1 127.0.0.1:$ADMIN/readyz && return 0
    kill -0 $GW 2>/dev/null || break
    sleep 0.1
  done
  echo "gateway not ready within 30 s"; tail -n 30 "$WORK/gateway.log"; exit 1
}
start_subscriber() {
  python3 "$HELPER" subscriber $SUB_PORT "$WORK/delivered.ids" 2>>"$WORK/subscriber.log" &
  SUB=$!; PIDS+=($SUB)
  for _ in $(seq 1 100); do curl -sf -o /dev/null --max-time 1 127.0.0.1:$SUB_PORT/ && return 0; sleep 0.05; done
  echo "subscriber not up"; cat "$WORK/subscriber.log"; exit 1
}
kill9() { { kill -9 "$1" || true; wait "$1" || true; } 2>/dev/null; }

# Schedule: KILLS gateway kills spread over the publishing window (≥ 2 s apart), one subscriber
# outage; times in seconds from the first publish.
DURATION=$(python3 -c "print($COUNT/$RATE)")
SCHEDULE=$(python3 - "$SEED" "$DURATION" "$KILLS" "$OUTAGE" <<'PY'
import random, sys
seed, dur, kills, outage = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r = random.Random(seed)
lo, hi = 1.0, max(2.0, dur - 1.0)
for _ in range(1000):
    ts = sorted(r.uniform(lo, hi) for _ in range(kills))
    if all(b - a >= 2.0 for a, b in zip(ts, ts[1:])):
        break
ev = [(t, "kill_gateway") for t in ts]
down = r.uniform(1.5, max(1.6, dur - outage - 1.0))
ev += [(down, "subscriber_down"), (down + outage, "subscriber_up")]
for t, a in sorted(ev):
    print(f"{t:.2f} {a}")
PY
)

start_subscriber
start_gateway
echo "crash probe: $COUNT events at $RATE/s, $KILLS × kill -9, subscriber down ${OUTAGE}s, seed $SEED"
echo "binary $TIDEGATE; ingress 127.0.0.1:$INGRESS admin 127.0.0.1:$ADMIN subscriber 127.0.0.1:$SUB_PORT"

T0=$(now)
python3 "$HELPER" publish "http://127.0.0.1:$INGRESS/default/default" "$COUNT" "$RATE" "$WORK/accepted.ids" \
  >"$WORK/publish.json" &
PUB=$!; PIDS+=($PUB)

while read -r at action; do
  wait_s=$(python3 -c "import sys; print(max(0.0, float(sys.argv[1]) - (float(sys.argv[2]) - float(sys.argv[3]))))" "$at" "$(now)" "$T0")
  sleep "$wait_s"
  case $action in
    kill_gateway)
      kill9 $GW; t=$(elapsed "$T0")
      start_gateway
      echo "  t=${t}s gateway killed (SIGKILL), ready again after $(python3 -c "print(f'{float(\"$(elapsed "$T0")\")-$t:.2f}')") s";;
    subscriber_down) kill9 $SUB; SUB=""; echo "  t=$(elapsed "$T0")s subscriber killed";;
    subscriber_up) start_subscriber; echo "  t=$(elapsed "$T0")s subscriber back";;
  esac
done <<<"$SCHEDULE"
[ -n "$SUB" ] || start_subscriber

# The publisher is bounded: COUNT ids, each retried for at most 10 s.
wait $PUB || { echo "publisher failed"; exit 1; }
echo "  publishing done after $(elapsed "$T0") s; waiting up to ${TAIL_WAIT}s for deliveries"
status=0
python3 "$HELPER" report "$WORK/accepted.ids" "$WORK/delivered.ids" "$TAIL_WAIT" "$WORK/publish.json" || status=$?
if ! kill -0 $GW 2>/dev/null; then echo "  FAIL: gateway exited"; status=1; fi
P=$(curl -s --max-time 2 127.0.0.1:$ADMIN/api/v1/triggers | python3 -c 'import json,sys; t=json.load(sys.stdin); print(" ".join(f"{k}={v}" for x in t for k,v in x.items() if not isinstance(v,(dict,list))))' 2>/dev/null || true)
echo "  trigger: $P"
REDELIVERED=$(curl -s --max-time 2 127.0.0.1:$ADMIN/metrics | awk '/^tidegate_delivery_(redelivered|dropped)_total/ {print}' | tr '\n' ' ' || true)
echo "  metrics (last gateway run only): ${REDELIVERED:-none}"
if [ $status -ne 0 ]; then echo "gateway log tail:"; grep -v '^\s*$' "$WORK/gateway.log" | tail -n 20 || true; fi
exit $status
