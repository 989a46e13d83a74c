# Shared by the bench scripts (source it after setting TIDEGATE): checks the binary, makes a
# work directory, and on exit kills every process in PIDS (and $GW, $SUB when set) with its
# children, then removes the work directory unless KEEP_WORK is set.
[ -x "$TIDEGATE" ] || { echo "no tidegate binary at $TIDEGATE (cargo build --release, or set TIDEGATE_BIN)"; exit 2; }
TIDEGATE=$(realpath "$TIDEGATE")

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  { for p in "${PIDS[@]}" ${GW:-} ${SUB:-}; do
      pkill -9 -P "$p" || true
      kill -9 "$p" || true
    done
    wait || true; } 2>/dev/null
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
