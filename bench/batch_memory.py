#!/usr/bin/env python3
"""Gateway memory under concurrent 4 MiB batch publishes.

Starts `tidegate serve` (embedded default) with a Trigger whose filter matches nothing (so every
event is stored, then settled as filtered), sends CONCURRENCY batches of ~4 MiB at once, samples
the gateway's RSS every 50 ms, and prints idle, peak and settled RSS plus the answers by status.
Everything runs on 127.0.0.1 and stops by itself.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("TIDEGATE_BIN", "target/release/tidegate")
CONCURRENCY = int(os.environ.get("CONCURRENCY", "48"))
BODY_BYTES = int(os.environ.get("BODY_BYTES", str(4 * 1024 * 1024 - 4096)))
EVENT_DATA = int(os.environ.get("EVENT_DATA", "0"))  # bytes of data per event (0: tiny events)
EXTRA = os.environ.get("EXTRA_ARGS", "").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def batch_body():
    data = "x" * EVENT_DATA
    events, size, i = [], 2, 0
    while True:
        e = {"specversion": "1.0", "id": str(i), "source": "b", "type": "t"}
        if EVENT_DATA:
            e["data"] = data
        text = json.dumps(e, separators=(",", ":"))
        if size + len(text) + 1 > BODY_BYTES:
            break
        events.append(text)
        size += len(text) + 1
        i += 1
    return ("[" + ",".join(events) + "]").encode(), len(events)


def main():
    tmp = tempfile.mkdtemp(prefix="tidegate-batch-mem-")
    manifests = os.path.join(tmp, "manifests")
    os.makedirs(manifests)
    with open(os.path.join(manifests, "m.yaml"), "w") as f:
        f.write(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n  namespace: default\n"
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: none\n  namespace: default\n"
            "spec:\n  broker: default\n  filter:\n    attributes:\n      type: never\n"
            "  subscriber:\n    uri: http://127.0.0.1:9/\n"
        )
    port, admin = free_port(), free_port()
    gw = subprocess.Popen(
        [BIN, "serve", "--manifests", manifests, "--data-dir", os.path.join(tmp, "data"),
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"] + EXTRA,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        body, events = batch_body()
        time.sleep(1)
        idle = rss_kib(gw.pid)
        samples, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(rss_kib(gw.pid))
                time.sleep(0.05)

        statuses, lock = {}, threading.Lock()

        def publish():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                c.request("POST", "/default/default", body,
                          {"content-type": "application/cloudevents-batch+json"})
                r = c.getresponse()
                r.read()
                key = r.status
            except OSError as e:
                key = type(e).__name__
            with lock:
                statuses[key] = statuses.get(key, 0) + 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.time()
        threads = [threading.Thread(target=publish) for _ in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst = time.time() - started
        time.sleep(5)
        stop.set()
        sampler.join()
        after = rss_kib(gw.pid)
        print(f"batches: {CONCURRENCY} x {len(body)} bytes ({events} events each), burst {burst:.1f} s")
        print(f"answers: {dict(sorted(statuses.items(), key=str))}")
        print(f"RSS idle {idle / 1024:.1f} MiB, peak {max(samples) / 1024:.1f} MiB, "
              f"5 s after the burst {after / 1024:.1f} MiB ({after / idle:.2f}x idle)")
    finally:
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
