#!/usr/bin/env bash
# HTTP proxy benchmark: the same backend pod reached directly, through tidegate (Host routing,
# precise dispatch, exact accounting) and through nginx as a reverse proxy. Prints rps, p50/p99
# and the proxy process's CPU per request at saturation (wrk) and at a fixed rate (hey -q).
# Then memory: gateway RSS idle and with 10 000 requests queued for a cold revision.
# Loopback only; every run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RATE_WORKERS=${RATE_WORKERS:-32}
RATE_PER_WORKER=${RATE_PER_WORKER:-100}   # 32 × 100 = 3200 rps fixed rate
# MEMORY=0 skips the memory part.
for tool in wrk hey nginx h2load; do
  command -v "$tool" >/dev/null || { echo "installing $tool"; apt-get install -y -qq wrk hey nginx-light nghttp2-client >/dev/null; }
done
if [ -z "${TIDEGATE_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${TIDEGATE_BIN:-$PWD/target/release/tidegate}
WORK=$(mktemp -d)
PIDS=()
# Children are listed before their parent dies: a parent killed first orphans them (nginx's
# workers, holding this script's stdout open), one killed last respawns them.
cleanup() {
  for p in "${PIDS[@]}"; do
    local kids; kids=$(pgrep -P "$p" || true)
    kill -9 "$p" 2>/dev/null || true
    [ -z "$kids" ] || kill -9 $kids 2>/dev/null || true
  done
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { local t=0; for p in "$@"; do read -r -a f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo $t; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

INGRESS=$(port); ADMIN=$(port)
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/bench.yaml" <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/class: precise.tidegate.dev
        autoscaling.knative.dev/min-scale: "1"
        autoscaling.knative.dev/max-scale: "1"
    spec:
      containerConcurrency: 0
      containers:
        - command: [tidegate, sample-service, --keep, "0"]
---
# Knative accepts initial-scale 0 only with this flag.
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data:
  allow-zero-initial-scale: "true"
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: cold, namespace: default}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/class: precise.tidegate.dev
        autoscaling.knative.dev/initial-scale: "0"
        autoscaling.knative.dev/max-scale: "1"
    spec:
      timeoutSeconds: 600
      containers:
        - command: [sh, -c, "exec sleep 600"]
YAML
RUST_LOG=warn "$BIN" serve --manifests "$WORK/manifests" --data-dir "$WORK/data" \
  --listen 127.0.0.1:$INGRESS --admin-listen 127.0.0.1:$ADMIN 2>"$WORK/gateway.log" &
GW=$!; PIDS+=($GW)
for _ in $(seq 1 200); do
  POD=$(curl -s 127.0.0.1:$ADMIN/api/v1/revisions | python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin) if x["service"]=="bench"]; print(r[0]["pods"][0]["address"] if r and r[0]["pods"] else "")' 2>/dev/null || true)
  [ -n "$POD" ] && break; sleep 0.1
done
[ -n "$POD" ] || { echo "backend pod never became ready"; cat "$WORK/gateway.log"; exit 1; }
sleep 1
IDLE_RSS=$(rss_kib $GW)

NGINX_PORT=$(port); NGINX_H2_PORT=$(port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  # tidegate closes no connection after a number of requests; nginx by default after 1000.
  keepalive_requests 100000000;
  upstream backend { server $POD; keepalive 128; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; }
  }
  # h2c with prior knowledge (cleartext http2), the same upstream.
  server {
    listen 127.0.0.1:$NGINX_H2_PORT http2;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; }
  }
}
NGINX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGX=$!; PIDS+=($NGX); sleep 0.5
NGX_ALL=($NGX $(pgrep -P $NGX))

# run NAME URL HOST PROXY_PIDS...
results=()
run() {
  local name=$1 url=$2 host=$3; shift 3
  local before; before=$( [ $# -gt 0 ] && cpu_ticks "$@" || echo 0 )
  local out; out=$(wrk -t2 -c$CONNS -d${DURATION}s --latency -H "Host: $host" "$url")
  local after; after=$( [ $# -gt 0 ] && cpu_ticks "$@" || echo 0 )
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local total; total=$(awk '/requests in/ {print $1}' <<<"$out")
  local p50; p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  local p99; p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local hz; hz=$(getconf CLK_TCK)
  local cpu_us="-"; [ $# -gt 0 ] && cpu_us=$(python3 -c "print(f'{($after-$before)/$hz/$total*1e6:.1f}')")
  printf '%-28s %10s %10s %10s %14s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us"
  results+=("$name=$rps")
}
rate() {
  local name=$1 url=$2 host=$3
  local out; out=$(hey -z ${DURATION}s -c $RATE_WORKERS -q $RATE_PER_WORKER -host "$host" "$url")
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p50; p50=$(awk '/ 50%/ {print $3*1000 "ms"}' <<<"$out")
  local p99; p99=$(awk '/ 99%/ {print $3*1000 "ms"}' <<<"$out")
  printf '%-28s %10s %10s %10s\n' "$name" "$rps" "$p50" "$p99"
}

echo "proxy benchmark: wrk -t2 -c$CONNS -d${DURATION}s, same backend pod ($POD), 2 shared cores"
printf '%-28s %10s %10s %10s %14s\n' scenario rps p50 p99 "proxy µs CPU/req"
run "direct" "http://$POD/" "bench.default.example.com"
run "tidegate" "http://127.0.0.1:$INGRESS/" "bench.default.example.com" $GW
run "nginx" "http://127.0.0.1:$NGINX_PORT/" "bench.default.example.com" "${NGX_ALL[@]}"
python3 - "${results[@]}" <<'PY'
import sys
r = dict(a.split("=") for a in sys.argv[1:])
print(f"ratio tidegate/nginx rps: {float(r['tidegate'])/float(r['nginx']):.2f}   tidegate/direct: {float(r['tidegate'])/float(r['direct']):.2f}")
PY

# h2c inbound: h2load, H2_CONNS connections × H2_STREAMS streams; latency percentiles from its
# per-request log.
H2_CONNS=${H2_CONNS:-4}; H2_STREAMS=${H2_STREAMS:-16}
h2results=()
h2run() {
  local name=$1 url=$2 host=$3; shift 3
  rm -f "$WORK/h2.log"
  local before; before=$(cpu_ticks "$@")
  local out; out=$(h2load -t2 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" -H ":authority: $host" --log-file="$WORK/h2.log" "$url")
  local after; after=$(cpu_ticks "$@")
  local rps; rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  local done_; done_=$(awk '/^requests:/ {print $6}' <<<"$out")
  local ok; ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
  local hz; hz=$(getconf CLK_TCK)
  python3 - "$name" "$rps" "$ok" "$done_" "$after" "$before" "$hz" "$WORK/h2.log" <<'PY'
import sys
name, rps, ok, done, after, before, hz, log = sys.argv[1:]
durations = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) >= 3)
pct = lambda p: durations[min(len(durations) - 1, int(len(durations) * p))] / 1000 if durations else 0
cpu = (int(after) - int(before)) / int(hz) / max(int(done), 1) * 1e6
print(f"{name:<28} {rps:>10} {pct(0.5):>8.2f}ms {pct(0.99):>8.2f}ms {cpu:>14.1f}   ({ok} of {done} 2xx)")
PY
  h2results+=("$name=$rps")
}
echo
echo "h2c inbound: h2load -c$H2_CONNS -m$H2_STREAMS -D${DURATION}s (prior knowledge), pod reached over HTTP/1.1"
printf '%-28s %10s %10s %10s %14s\n' scenario rps p50 p99 "proxy µs CPU/req"
h2run "tidegate h2c" "http://127.0.0.1:$INGRESS/" "bench.default.example.com" $GW
h2run "nginx h2c" "http://127.0.0.1:$NGINX_H2_PORT/" "bench.default.example.com" "${NGX_ALL[@]}"
python3 - "${h2results[@]}" <<'PY'
import sys
r = dict(a.split("=") for a in sys.argv[1:])
print(f"ratio tidegate/nginx rps (h2c): {float(r['tidegate h2c'])/float(r['nginx h2c']):.2f}")
PY

echo
echo "fixed rate: hey -c $RATE_WORKERS -q $RATE_PER_WORKER (≈$((RATE_WORKERS*RATE_PER_WORKER)) rps)"
printf '%-28s %10s %10s %10s\n' scenario rps p50 p99
rate "direct" "http://$POD/" "bench.default.example.com"
rate "tidegate" "http://127.0.0.1:$INGRESS/" "bench.default.example.com"
rate "nginx" "http://127.0.0.1:$NGINX_PORT/" "bench.default.example.com"

echo
kill -9 $GW 2>/dev/null || true
[ "${MEMORY:-1}" = 1 ] || exit 0
# Memory, on fresh gateways serving only a revision whose pod never becomes ready, so every
# request stays queued: idle, then 10 000 requests as h2c streams (50 connections × 200), then
# 10 000 HTTP/1.1 connections with one request each.
mkdir -p "$WORK/cold"
# Everything after the first document (the ConfigMap and the cold Service, separators kept).
awk '/^---$/ && !seen {seen=1; next} seen' "$WORK/manifests/bench.yaml" > "$WORK/cold/cold.yaml"
queued() { curl -s 127.0.0.1:$ADMIN/api/v1/revisions | python3 -c 'import json,sys; print(sum(x["queued"] for x in json.load(sys.stdin)))' 2>/dev/null || echo 0; }
fresh() {
  INGRESS=$(port); ADMIN=$(port)
  RUST_LOG=warn "$BIN" serve --manifests "$WORK/cold" --data-dir "$WORK/data-$1" \
    --listen 127.0.0.1:$INGRESS --admin-listen 127.0.0.1:$ADMIN 2>>"$WORK/gateway.log" &
  GW=$!; PIDS+=($GW)
  for _ in $(seq 1 100); do curl -sf 127.0.0.1:$ADMIN/readyz >/dev/null && break; sleep 0.1; done
  sleep 1
}
wait_queued() { for _ in $(seq 1 300); do Q=$(queued); [ "$Q" -ge 10000 ] && break; sleep 0.1; done; }
fresh h2
echo "memory: gateway RSS idle $(rss_kib $GW) KiB"
timeout 60 h2load -n 10000 -c 50 -m 200 -H 'host: cold.default.example.com' "http://127.0.0.1:$INGRESS/" >/dev/null 2>&1 &
LOAD=$!; PIDS+=($LOAD)
wait_queued
echo "memory: $Q requests queued (h2c, 50 connections), gateway RSS $(rss_kib $GW) KiB"
kill -9 $LOAD $GW 2>/dev/null || true; sleep 1
fresh h1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
python3 - "$INGRESS" <<'PY' &
import socket, sys, time
port = int(sys.argv[1]); socks = []
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: cold.default.example.com\r\n\r\n")
    socks.append(s)
time.sleep(60)
PY
LOAD=$!; PIDS+=($LOAD)
wait_queued
echo "memory: $Q requests queued (HTTP/1.1, one connection each), gateway RSS $(rss_kib $GW) KiB"
