#!/usr/bin/env python3
"""Helpers for bench/overload.sh (Python 3.11 stdlib only).

  overload.py load PORT HOST CLIENTS DURATION OUT_JSON
      CLIENTS asyncio clients on keep-alive HTTP/1.1 connections to 127.0.0.1:PORT send
      `GET /` with `Host: HOST` back to back for DURATION seconds (THINK_MS env: pause after
      each answer; ABANDON env: fraction of requests whose client hangs up after 0.05-2 s,
      default 0), then wait up to GRACE s (env, default 40) for the answers still pending.
      Records statuses, Retry-After on 503s, the largest x-sample-inflight, transport errors.
  overload.py monitor GW_PID ADMIN_PORT INGRESS_PORT SERVICE DURATION OUT_JSON
      Every second: gateway VmRSS, GET admin /healthz latency (2 s timeout), one binary
      CloudEvent POSTed to /default/default (expects 202), and the revision's queued/in-flight.
  overload.py summary LOAD_JSON MONITOR_JSON DRAIN_JSON QUEUE_DEPTH CC [ALLOWED OUTCOMES_SUM]
      Prints the figures; exit 1 when a property is violated.
"""
import asyncio
import http.client
import json
import os
import random
import sys
import time


async def one_client(i, port, host, deadline, grace_deadline, think, abandon, rng, st):
    reader = writer = None
    req = f"GET /c{i} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: overload\r\n\r\n".encode()
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                st["connects"] += 1
            writer.write(req)
            await writer.drain()
            remaining = max(1.0, grace_deadline - time.monotonic())
            give_up = rng.uniform(0.05, 2.0) if rng.random() < abandon else None
            limit = min(give_up, remaining) if give_up else remaining
            status, headers, close = await asyncio.wait_for(read_response(reader), limit)
        except asyncio.TimeoutError:
            if give_up and give_up < remaining:
                # This client gives up while queued or in flight: its ticket/slot must be freed.
                st["abandoned"] += 1
                writer.close()
                reader = writer = None
                continue
            st["timeouts"] += 1
            break
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            key = type(e).__name__
            st["errors"][key] = st["errors"].get(key, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        st["statuses"][status] = st["statuses"].get(status, 0) + 1
        if status == 503:
            if "retry-after" not in headers:
                st["503_without_retry_after"] += 1
            else:
                st["retry_after_values"][headers["retry-after"]] = st["retry_after_values"].get(headers["retry-after"], 0) + 1
        elif status == 200:
            try:
                st["max_inflight"] = max(st["max_inflight"], int(headers.get("x-sample-inflight", "0")))
            except ValueError:
                pass
        if status not in (200, 503) and len(st["odd_examples"]) < 5 and status not in [e["status"] for e in st["odd_examples"]]:
            st["odd_examples"].append({"status": status, "headers": headers})
        if close:
            writer.close()
            reader = writer = None
            st["server_closed"] += 1
        if think:
            await asyncio.sleep(think)
    if writer is not None:
        writer.close()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        n = int(headers.get("content-length", "0"))
        if n:
            await reader.readexactly(n)
    close = headers.get("connection", "").lower() == "close"
    return status, headers, close


async def load_main(port, host, clients, duration, out):
    think = float(os.environ.get("THINK_MS", "0")) / 1000
    abandon = float(os.environ.get("ABANDON", "0"))
    rng = random.Random(int(os.environ.get("SEED", "1")))
    grace = float(os.environ.get("GRACE", "40"))
    st = {"statuses": {}, "errors": {}, "timeouts": 0, "connects": 0, "server_closed": 0,
          "503_without_retry_after": 0, "retry_after_values": {}, "max_inflight": 0,
          "odd_examples": [], "abandoned": 0}
    start = time.monotonic()
    deadline = start + duration
    tasks = [asyncio.create_task(one_client(i, port, host, deadline, deadline + grace, think, abandon, rng, st))
             for i in range(clients)]
    await asyncio.gather(*tasks)
    st["seconds"] = round(time.monotonic() - start, 2)
    st["clients"] = clients
    st["statuses"] = {str(k): v for k, v in st["statuses"].items()}
    with open(out, "w") as f:
        json.dump(st, f)


def monitor(gw_pid, admin, ingress, service, duration, out):
    res = {"rss_kib": [], "healthz_ms": [], "healthz_failures": [], "publish_ok": 0,
           "publish_failures": [], "queued_max": 0, "in_flight_max": 0, "samples": 0}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < duration:
        tick = start + n
        n += 1
        try:
            with open(f"/proc/{gw_pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        res["rss_kib"].append(int(line.split()[1]))
        except OSError as e:
            res["healthz_failures"].append(f"gateway process gone: {e}")
            break
        t = time.monotonic()
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            c.close()
            ms = (time.monotonic() - t) * 1000
            res["healthz_ms"].append(round(ms, 2))
            if r.status != 200:
                res["healthz_failures"].append(f"status {r.status}")
        except (OSError, http.client.HTTPException) as e:
            res["healthz_failures"].append(f"{type(e).__name__}: {e}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", ingress, timeout=5)
            c.request("POST", "/default/default", body=b'{"probe":true}', headers={
                "ce-specversion": "1.0", "ce-id": f"overload-{n}", "ce-source": "overload",
                "ce-type": "overload.tick", "content-type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 202:
                res["publish_ok"] += 1
            else:
                res["publish_failures"].append(f"status {r.status}")
        except (OSError, http.client.HTTPException) as e:
            res["publish_failures"].append(f"{type(e).__name__}: {e}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            c.request("GET", "/api/v1/revisions")
            revs = json.loads(c.getresponse().read())
            c.close()
            for rv in revs:
                if rv.get("service") == service:
                    res["queued_max"] = max(res["queued_max"], rv.get("queued", 0))
                    res["in_flight_max"] = max(res["in_flight_max"], rv.get("in_flight", 0))
                    for p in rv.get("pods", []):
                        res["in_flight_max_pod"] = max(res.get("in_flight_max_pod", 0), p.get("in_flight", 0))
        except (OSError, http.client.HTTPException, ValueError):
            pass
        res["samples"] += 1
        delay = tick + 1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    with open(out, "w") as f:
        json.dump(res, f)


def summary(load_json, monitor_json, drain_json, queue_depth, cc, allowed="200,503", outcomes_sum="?"):
    allowed = set(allowed.split(","))
    with open(load_json) as f:
        ld = json.load(f)
    with open(monitor_json) as f:
        mon = json.load(f)
    with open(drain_json) as f:
        drain = json.load(f)
    fails = []
    total = sum(ld["statuses"].values())
    print(f"overload results ({ld['clients']} clients, {ld['seconds']} s incl. grace)")
    print(f"  responses                {total}  ({total / max(ld['seconds'], 1):.0f}/s)")
    for s, c in sorted(ld["statuses"].items()):
        print(f"  status {s}               {c}")
    print(f"  503 Retry-After values   {ld['retry_after_values']}")
    print(f"  503 without Retry-After  {ld['503_without_retry_after']}")
    print(f"  transport errors         {ld['errors'] or 0}; timeouts {ld['timeouts']}; "
          f"connects {ld['connects']}; server-closed {ld['server_closed']}; "
          f"abandoned by the client {ld['abandoned']}")
    print(f"  max x-sample-inflight    {ld['max_inflight']} (containerConcurrency {cc})")
    rss = mon["rss_kib"]
    hz = mon["healthz_ms"]
    if rss:
        print(f"  gateway RSS              min {min(rss) / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB over {len(rss)} samples")
    if hz:
        s = sorted(hz)
        print(f"  healthz latency          max {s[-1]:.1f} ms, p50 {s[len(s) // 2]:.1f} ms over {len(hz)} probes; failures {len(mon['healthz_failures'])}")
    print(f"  publishes 202            {mon['publish_ok']} of {mon['publish_ok'] + len(mon['publish_failures'])}")
    print(f"  admin: max queued {mon['queued_max']} (queue-depth {queue_depth}), max in flight {mon['in_flight_max']}, "
          f"max per pod {mon.get('in_flight_max_pod', 0)}")
    print(f"  after load               {drain}")
    print(f"  proxy outcomes counted   {outcomes_sum} (responses {total}, abandoned {ld['abandoned']})")
    other = {s: c for s, c in ld["statuses"].items() if s not in allowed}
    if other:
        fails.append(f"statuses other than {sorted(allowed)}: {other}; examples {ld['odd_examples'][:2]}")
    if ld["statuses"].get("200", 0) == 0:
        fails.append("no request succeeded")
    if ld["503_without_retry_after"]:
        fails.append(f"{ld['503_without_retry_after']} 503s without Retry-After")
    if ld["errors"] or ld["timeouts"]:
        fails.append(f"transport errors {ld['errors']}, timeouts {ld['timeouts']}")
    if ld["max_inflight"] > cc or mon.get("in_flight_max_pod", 0) > cc:
        fails.append(f"containerConcurrency {cc} exceeded")
    if mon["queued_max"] > queue_depth:
        fails.append(f"queued {mon['queued_max']} > queue-depth {queue_depth}")
    if mon["healthz_failures"]:
        fails.append(f"healthz failures: {mon['healthz_failures'][:5]}")
    if mon["publish_failures"]:
        fails.append(f"publish failures: {mon['publish_failures'][:5]}")
    if not mon["publish_ok"]:
        fails.append("no publish succeeded")
    if not drain.get("drained"):
        fails.append(f"revision did not drain after the load: {drain}")
    for f in fails:
        print(f"  FAIL: {f}")
    if not fails:
        print("  OK")
    return 1 if fails else 0


def main():
    cmd = sys.argv[1]
    a = sys.argv[2:]
    if cmd == "load":
        asyncio.run(load_main(int(a[0]), a[1], int(a[2]), float(a[3]), a[4]))
        return 0
    if cmd == "monitor":
        monitor(int(a[0]), int(a[1]), int(a[2]), a[3], float(a[4]), a[5])
        return 0
    if cmd == "summary":
        return summary(a[0], a[1], a[2], int(a[3]), int(a[4]), *a[5:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
