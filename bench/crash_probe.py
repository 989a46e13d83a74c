#!/usr/bin/env python3
"""Helpers for bench/crash_probe.sh (Python 3.11 stdlib only).

  crash_probe.py subscriber PORT IDS_FILE
      HTTP subscriber on 127.0.0.1:PORT: appends the ce-id of every POST to IDS_FILE (one
      write(2) per line on an O_APPEND descriptor, before answering 202), so the record
      survives `kill -9` of this process.
  crash_probe.py publish URL COUNT RATE ACCEPTED_FILE [WORKERS]
      Publishes ids 0..COUNT-1 as binary-mode CloudEvents paced at RATE/s. 202 -> the id is
      written to ACCEPTED_FILE. Connection refused (the request surely never arrived) is
      retried for the same id for up to 10 s; any other failure (reset, timeout, non-202) is
      final for that id: "ambiguous" for transport errors after sending, "rejected" for a status.
      Prints one JSON summary line.
  crash_probe.py report ACCEPTED_FILE IDS_FILE WAIT_SECONDS PUBLISH_JSON
      Waits (bounded) until every accepted id was delivered; prints figures; exit 1 if lost.
"""
import http.client
import json
import os
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def subscriber(port: int, ids_file: str) -> None:
    fd = os.open(ids_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            ce_id = self.headers.get("ce-id")
            if ce_id is not None:
                os.write(fd, (ce_id.strip() + "\n").encode("utf-8", "replace"))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self):  # noqa: N802  (readiness)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 256

    Server(("127.0.0.1", port), Handler).serve_forever()


def publish(url: str, count: int, rate: float, accepted_file: str, workers: int = 8) -> None:
    u = url.split("://", 1)[1]
    hostport, _, path = u.partition("/")
    host, _, port = hostport.partition(":")
    path = "/" + path
    port = int(port)
    jobs: "queue.Queue[int | None]" = queue.Queue()
    lock = threading.Lock()
    out = open(accepted_file, "a", buffering=1)
    stats = {"published": 0, "accepted": 0, "rejected": 0, "ambiguous": 0, "refused_gave_up": 0,
             "refused_retries": 0, "statuses": {}}

    def worker():
        conn = None
        while True:
            n = jobs.get()
            if n is None:
                return
            body = json.dumps({"n": n}).encode()
            headers = {"ce-specversion": "1.0", "ce-id": str(n), "ce-source": "probe",
                       "ce-type": "probe", "content-type": "application/json"}
            deadline = time.monotonic() + 10
            outcome = None
            while outcome is None:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=10)
                sent = False
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    sent = True
                    r = conn.getresponse()
                    r.read()
                    if r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    outcome = ("status", r.status)
                except ConnectionRefusedError:
                    conn.close()
                    conn = None
                    with lock:
                        stats["refused_retries"] += 1
                    if time.monotonic() > deadline:
                        outcome = ("gave_up", None)
                    else:
                        time.sleep(0.02)
                except (OSError, http.client.HTTPException):
                    # A pooled connection found closed before anything was written is safe to
                    # retry; once the request may have been read, the outcome is unknown.
                    conn.close()
                    conn = None
                    if not sent:
                        if time.monotonic() > deadline:
                            outcome = ("gave_up", None)
                        else:
                            time.sleep(0.02)
                    else:
                        outcome = ("ambiguous", None)
            with lock:
                stats["published"] += 1
                kind, status = outcome
                if kind == "status":
                    stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
                    if status == 202:
                        stats["accepted"] += 1
                        out.write(f"{n}\n")
                    else:
                        stats["rejected"] += 1
                elif kind == "ambiguous":
                    stats["ambiguous"] += 1
                else:
                    stats["refused_gave_up"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = time.monotonic()
    last_report = start
    for n in range(count):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # Keep the backlog bounded so pacing stays meaningful while the gateway is down.
        while jobs.qsize() > workers * 4:
            time.sleep(0.005)
        jobs.put(n)
        now = time.monotonic()
        if now - last_report >= 5:
            last_report = now
            with lock:
                print(f"    publish: {n + 1}/{count} queued, {stats['accepted']} accepted", file=sys.stderr, flush=True)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout=60)
    out.close()
    stats["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(stats), flush=True)


def read_ids(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            return [line.decode("utf-8", "replace").strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def report(accepted_file: str, ids_file: str, wait: float, publish_json: str) -> int:
    with open(publish_json) as f:
        pub = json.loads(f.read().strip().splitlines()[-1])
    accepted = set(read_ids(accepted_file))
    deadline = time.monotonic() + wait
    started = time.monotonic()
    while True:
        delivered = read_ids(ids_file)
        unique = set(delivered)
        missing = accepted - unique
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    waited = time.monotonic() - started
    dup = len(delivered) - len(unique)
    counts: dict[str, int] = {}
    for i in delivered:
        counts[i] = counts.get(i, 0) + 1
    dup_ids = sum(1 for c in counts.values() if c > 1)
    unacked = unique - accepted
    print("crash probe results")
    print(f"  published (ids tried)        {pub['published']}")
    print(f"  accepted (202)               {len(accepted)}")
    print(f"  rejected (other status)      {pub['rejected']}  {pub['statuses']}")
    print(f"  ambiguous (conn lost after send) {pub['ambiguous']}")
    print(f"  refused, gave up             {pub['refused_gave_up']}  (refused retries: {pub['refused_retries']})")
    print(f"  delivered unique             {len(unique)}")
    print(f"  delivered, never acked       {len(unacked)}  (ambiguous/killed-before-202 publishes that were stored)")
    print(f"  lost (acked, not delivered)  {len(missing)}")
    print(f"  duplicates                   {dup} extra deliveries over {dup_ids} ids")
    print(f"  publish time                 {pub['seconds']} s; waited {waited:.1f} s for the tail")
    if missing:
        sample = sorted(missing, key=lambda s: int(s) if s.isdigit() else -1)[:20]
        print(f"  FAIL: {len(missing)} accepted ids never delivered, e.g. {sample}")
        return 1
    if len(accepted) < pub["published"] // 2:
        print("  FAIL: fewer than half the events were accepted; the probe did not exercise much")
        return 1
    print("  OK: every accepted event was delivered")
    return 0


def main() -> int:
    cmd = sys.argv[1]
    if cmd == "subscriber":
        subscriber(int(sys.argv[2]), sys.argv[3])
        return 0
    if cmd == "publish":
        publish(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5],
                int(sys.argv[6]) if len(sys.argv) > 6 else 8)
        return 0
    if cmd == "report":
        return report(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
