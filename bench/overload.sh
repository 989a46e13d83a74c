#!/usr/bin/env bash
# Overload: a Knative Service with capacity 2 (one pod, containerConcurrency 2, 200 ms per
# request, queue-depth 100) is hammered by CLIENTS concurrent keep-alive clients for DURATION
# seconds, while a monitor samples the gateway's RSS, GET /healthz latency and publishes one
# CloudEvent to the Broker every second (bench/overload.py). Only 200 and 503 + Retry-After
# may come back; healthz and publishing must keep working; the pod never sees more than
# containerConcurrency; the queue never exceeds its depth and drains after the load.
#   TIDEGATE_BIN=/path/to/tidegate CLIENTS=500 DURATION=15 bash bench/overload.sh
# Other knobs: QUEUE_DEPTH (100), TIMEOUT_SECONDS (30), THINK_MS (0), ABANDON (0; e.g. 0.05 = 5 % of clients hang up after 0.05-2 s), GRACE (40), SEED.
# Loopback only; every run is bounded by its duration (+ grace for queued answers).
set -euo pipefail
cd "$(dirname "$0")/.."
TIDEGATE=${TIDEGATE_BIN:-target/release/tidegate}
CLIENTS=${CLIENTS:-500}
DURATION=${DURATION:-15}
QUEUE_DEPTH=${QUEUE_DEPTH:-100}
CC=2
# timeoutSeconds: at 30 every queued request (≤ QUEUE_DEPTH × 0.1 s of work) is served in time,
# so only 200 and 503 may come back; set lower and 504s are allowed (queued requests time out).
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-30}
ALLOWED=200,503
[ "$TIMEOUT_SECONDS" -ge 30 ] || ALLOWED=200,503,504
HELPER=$PWD/bench/overload.py
source bench/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

INGRESS=$(port); ADMIN=$(port)
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/overload.yaml" <<YAML
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: slow, namespace: default}
spec:
  template:
    metadata:
      annotations:
        tidegate.dev/queue-depth: "$QUEUE_DEPTH"
        tidegate.dev/reserved-instances: "1"
        autoscaling.knative.dev/max-scale: "1"
    spec:
      containerConcurrency: $CC
      timeoutSeconds: $TIMEOUT_SECONDS
      containers:
        - command: ["tidegate", "sample-service"]
          args: ["--delay", "200ms", "--keep", "0"]
YAML
RUST_LOG=${RUST_LOG:-warn} "$TIDEGATE" serve --manifests "$WORK/manifests" --data-dir "$WORK/data" \
  --listen 127.0.0.1:$INGRESS --admin-listen 127.0.0.1:$ADMIN >"$WORK/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
ready=""
for _ in $(seq 1 300); do
  ready=$(curl -s --max-time 1 127.0.0.1:$ADMIN/api/v1/revisions | python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin) if x["service"]=="slow"]; print("yes" if r and r[0]["ready_pods"]>=1 else "")' 2>/dev/null || true)
  [ -n "$ready" ] && break
  kill -0 $GW 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "service pod never became ready"; tail -n 30 "$WORK/gateway.log"; exit 1; }
echo "overload: $CLIENTS clients × ${DURATION}s on slow.default.example.com (1 pod, cc $CC, 200 ms, queue-depth $QUEUE_DEPTH, timeoutSeconds $TIMEOUT_SECONDS)"
echo "binary $TIDEGATE; ingress 127.0.0.1:$INGRESS admin 127.0.0.1:$ADMIN"

python3 "$HELPER" monitor $GW $ADMIN $INGRESS slow "$DURATION" "$WORK/monitor.json" &
MON=$!; PIDS+=($MON)
python3 "$HELPER" load $INGRESS slow.default.example.com "$CLIENTS" "$DURATION" "$WORK/load.json" &
LOAD=$!; PIDS+=($LOAD)
wait $MON || { echo "monitor failed"; exit 1; }
wait $LOAD || { echo "load generator failed"; exit 1; }

# Exact accounting: once every client has its answer, nothing stays queued or in flight.
drained='{"drained": false}'
for _ in $(seq 1 100); do
  drained=$(curl -s --max-time 2 127.0.0.1:$ADMIN/api/v1/revisions | python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin) if x["service"]=="slow"][0]; print(json.dumps({"drained": r["queued"]==0 and r["in_flight"]==0, "queued": r["queued"], "in_flight": r["in_flight"], "ready_pods": r["ready_pods"]}))' 2>/dev/null || echo '{"drained": false, "error": "admin unreachable"}')
  case $drained in *'"drained": true'*) break;; esac
  sleep 0.1
done
echo "$drained" > "$WORK/drain.json"
OUTCOMES=$(curl -s --max-time 2 127.0.0.1:$ADMIN/metrics | awk '/^tidegate_proxy_requests_total/ {o=$1; sub(/.*outcome="/, "", o); sub(/".*/, "", o); printf "%s=%s ", o, $2; s+=$2} END {printf "sum=%d", s}' || true)
status=0
python3 "$HELPER" summary "$WORK/load.json" "$WORK/monitor.json" "$WORK/drain.json" "$QUEUE_DEPTH" $CC "$ALLOWED" "${OUTCOMES:-?}" || status=$?
kill -0 $GW 2>/dev/null || { echo "  FAIL: gateway exited"; status=1; }
if [ $status -ne 0 ]; then echo "gateway log tail:"; tail -n 20 "$WORK/gateway.log" || true; fi
exit $status
