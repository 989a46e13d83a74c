#!/usr/bin/env python3
"""Ingress fuzzer for bench/fuzz_ingress.sh (Python 3.11 stdlib only).

  fuzz_ingress.py fuzz PORT COUNT SEED OUT_JSON
      Sends COUNT randomized / mutated CloudEvents requests over raw sockets to 127.0.0.1:PORT
      (binary, structured, batch, random bytes, protocol-level oddities), mostly to
      POST /default/default. Deterministic for a given SEED. Records status counts, counts per
      generator kind, requests without a response, and examples of every 5xx and of requests
      the gateway did not answer. FUZZ_LOG env: write every request and answer there (JSON lines).
  fuzz_ingress.py valid PORT N PREFIX SUBSCRIBER_URL WAIT OUT_JSON
      Publishes N valid binary events (ids PREFIX-0..N-1) and waits up to WAIT s until the
      sample-service at SUBSCRIBER_URL lists all of them in GET /events.
"""
import base64
import http.client
import json
import os
import random
import socket
import sys
import time

RESERVED = ["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"]
WEIRD_STRINGS = ["", " ", "\t", "0", "-1", "null", "true", "{}", "[]", "%", "%G1", "%C3%28", "%00", "%FF",
                 "%25", "a%20b", "\u00e9", "\u202e", "\ufeff", "\U0001F600", "\\", "\"", "'", "<x>",
                 "2026-13-45T99:99:99Z", "2026-01-01T00:00:00", "9999-12-31T23:59:60Z", "::", "http://",
                 "urn:", "/relative", "a" * 300]
WEIRD_JSON = [None, True, False, 0, -1, 1.5, 2 ** 31, -(2 ** 31) - 1, 2 ** 63, 2 ** 70, 1e308, -0.0,
              "", [], [1, 2], {}, {"a": 1}, "x" * 1000]
CONTENT_TYPES = ["application/json", "text/plain", "application/octet-stream", "application/xml",
                 "application/json; charset=utf-8", "application/json; charset=bogus", ";;;", "/", "*/*",
                 "application/cloudevents+json", "application/cloudevents-batch+json",
                 "application/cloudevents+xml", "application/cloudevents", "APPLICATION/CLOUDEVENTS+JSON",
                 "application/cloudevents+json; charset=latin1", "multipart/form-data; boundary=x",
                 "text/plain; charset=\"utf-8\"", "\u00e9/\u00e9", "application/cloudevents+json;;",
                 "application/cloudevents-batch+json; charset=utf-8"]


class Gen:
    def __init__(self, rng: random.Random):
        self.r = rng
        self.n = 0

    def s(self, k=12):
        return "".join(self.r.choice("abcdefghijklmnopqrstuvwxyz0123456789-._~") for _ in range(self.r.randint(1, k)))

    def rbytes(self, lo, hi):
        return bytes(self.r.getrandbits(8) for _ in range(self.r.randint(lo, hi)))

    def weird_value(self) -> bytes:
        c = self.r.random()
        if c < 0.35:
            return self.r.choice(WEIRD_STRINGS).encode("utf-8")
        if c < 0.5:  # invalid UTF-8 / obs-text
            return self.s(6).encode() + bytes([self.r.randint(0x80, 0xFF)]) + self.s(4).encode()
        if c < 0.6:  # control characters hyper may or may not accept
            return b"a" + bytes([self.r.choice([0x00, 0x01, 0x08, 0x0B, 0x1F, 0x7F, 0x09])]) + b"b"
        if c < 0.7:  # huge
            return b"v" * self.r.choice([1024, 8192, 65536, 200_000])
        if c < 0.85:
            return self.rbytes(1, 40).replace(b"\r", b"").replace(b"\n", b"")
        return str(self.r.choice(WEIRD_JSON)).encode()

    def event(self, idx=None):
        self.n += 1
        e = {"specversion": "1.0", "id": f"fz-{self.n}" if idx is None else idx, "source": "fuzz/" + self.s(),
             "type": "fuzz." + self.s()}
        if self.r.random() < 0.3:
            e["subject"] = self.s()
        if self.r.random() < 0.3:
            e["time"] = "2026-11-25T10:00:00.123Z"
        if self.r.random() < 0.2:
            e["dataschema"] = "https://example.com/schema/" + self.s()
        for _ in range(self.r.choice([0, 0, 1, 2])):
            e["x" + self.s(8).replace("-", "").replace(".", "").replace("_", "").replace("~", "")[:10]] = self.s()
        return e

    # ---- binary mode -------------------------------------------------------------------
    def binary(self):
        e = self.event()
        headers = [(f"ce-{k}".encode(), str(v).encode()) for k, v in e.items()]
        ctype = b"application/json"
        body = json.dumps({"n": self.n}).encode()
        notes = []
        for _ in range(self.r.randint(1, 3)):
            m = self.r.randrange(16)
            notes.append(m)
            if m == 0 and headers:
                headers.pop(self.r.randrange(len(headers)))
            elif m == 1:
                headers = [(k, v) for k, v in headers if k != b"ce-specversion"]
                headers.append((b"ce-specversion", self.r.choice([b"0.3", b"1.1", b"2.0", b"", b"1", b"1.0.0",
                                                                  b" 1.0", b"1.0 ", b"0.1", b"ABC", b"1.0\t"])))
            elif m == 2 and headers:
                i = self.r.randrange(len(headers))
                headers[i] = (headers[i][0], self.weird_value())
            elif m == 3:
                name = self.r.choice([b"ce-UPPER", b"ce-a_b", b"ce-", b"ce-" + b"x" * 30, b"ce-data",
                                      b"ce-data_base64", b"ce-\xc3\xa4", b"ce-a.b", b"ce-1", b"CE-ID",
                                      b"ce-id ", b"ce-" + self.s(5).encode(), b"ce-" + b"y" * 21])
                headers.append((name, self.weird_value() if self.r.random() < 0.5 else b"v"))
            elif m == 4 and headers:
                headers.append(self.r.choice(headers))  # duplicate, same value
            elif m == 5:
                headers.append((self.r.choice([b"ce-id", b"ce-source", b"ce-type", b"ce-specversion"]), self.s().encode()))
            elif m == 6:
                headers.append((b"ce-time", self.r.choice([b"yesterday", b"2026-13-45T99:99:99Z", b"2026-01-01T00:00:00",
                                                           b"0", b"", b"2026-01-01T00:00:00+25:00", b"2026-02-30T00:00:00Z"])))
            elif m == 7:
                headers.append((b"ce-dataschema", self.r.choice([b"not a uri", b"::", b"", b"http://[::1", b"%ZZ"])))
            elif m == 8:
                ctype = self.r.choice(CONTENT_TYPES).encode() if self.r.random() < 0.9 else None
            elif m == 9:
                for _ in range(self.r.choice([50, 120, 1000])):
                    headers.append((b"ce-x" + self.s(6).replace("-", "").replace(".", "").replace("~", "").replace("_", "").encode(), b"v"))
            elif m == 10:
                headers.append((self.rbytes(1, 12).replace(b":", b"").replace(b"\r", b"").replace(b"\n", b"") or b"x", b"v"))
            elif m == 11:
                body = self.rbytes(0, 2000)
            elif m == 12:
                body = b""
            elif m == 13:
                body = b"z" * self.r.choice([70_000, 300_000])  # over the fuzz run's body limit sometimes
            elif m == 14:
                headers = [(k, v) for k, v in headers if k != b"ce-specversion"]
                headers += [(b"ce-specversion", b"0.3"), (b"ce-schemaurl", self.weird_value()),
                            (b"ce-datacontentencoding", self.r.choice([b"base64", b"Base64", b"gzip", b""]))]
                if self.r.random() < 0.5:
                    body = base64.b64encode(body) if self.r.random() < 0.5 else b"!!notbase64"
            elif m == 15:
                headers.append((b"ce-" + self.r.choice(["xint", "xbool", "xbin"]).encode(), self.weird_value()))
        if ctype is not None:
            headers.append((b"content-type", ctype))
        return "binary", headers, body

    # ---- structured / batch ------------------------------------------------------------------
    def mutate_obj(self, e):
        for _ in range(self.r.randint(1, 3)):
            m = self.r.randrange(12)
            keys = list(e.keys())
            if m == 0 and keys:
                e.pop(self.r.choice(keys))
            elif m == 1 and keys:
                e[self.r.choice(keys)] = self.r.choice(WEIRD_JSON)
            elif m == 2:
                e["specversion"] = self.r.choice(["0.3", "1.1", "2.0", "", 1.0, 1, None, "1.0 "])
            elif m == 3:
                e[self.r.choice(["UPPER", "a-b", "", "x" * 25, "\u00e4", "a.b", "a b", "data_base64x", "1a"])] = self.s()
            elif m == 4:
                e[self.s(8).replace("-", "").replace(".", "").replace("~", "").replace("_", "") or "ext"] = self.r.choice(WEIRD_JSON)
            elif m == 5:
                e["data"] = self.r.choice(WEIRD_JSON)
                e["data_base64"] = self.r.choice(["aGVsbG8=", "!!!", "abc", 5, None, ""])
            elif m == 6:
                e["data_base64"] = self.r.choice(["aGVsbG8=", "!!!", "abc", "aGVsbG8", 5, None, "", "===="])
            elif m == 7:
                e["time"] = self.r.choice(["yesterday", 0, "2026-13-45T99:99:99Z", "", None, "2026-01-01T00:00:00"])
            elif m == 8:
                e["datacontenttype"] = self.r.choice(CONTENT_TYPES + [5, None, ""])
                e["data"] = self.r.choice(WEIRD_JSON + ["text data", {"k": [1, 2, {"z": None}]}])
            elif m == 9:
                e["dataschema"] = self.r.choice(["not a uri", "::", "", 5, "http://[::1"])
            elif m == 10:
                e["source"] = self.r.choice(["", " ", "%ZZ", "http://[", 7, None, "a" * 5000])
            elif m == 11:
                e["id"] = self.r.choice(["", 5, None, [], "x" * 10000, "\u0000"])
        return e

    def serialize(self, obj) -> bytes:
        raw = json.dumps(obj, allow_nan=True).encode()
        if self.r.random() < 0.6:
            return raw
        m = self.r.randrange(11)
        if m == 0 and raw:
            return raw[: self.r.randrange(len(raw))]  # truncated
        if m == 1:
            i = self.r.randrange(len(raw) + 1)
            return raw[:i] + bytes([self.r.getrandbits(8)]) + raw[i:]
        if m == 2:  # invalid UTF-8 inside a string
            return raw.replace(b'"fuzz', b'"\xff\xfefuzz', 1)
        if m == 3:  # lone surrogate escape
            return raw.replace(b'"fuzz', b'"\\ud800fuzz', 1)
        if m == 4:  # duplicate key
            return raw.replace(b"{", b'{"id":"dup",', 1)
        if m == 5:
            return b"\xef\xbb\xbf" + raw
        if m == 6:
            return raw + b" trailing garbage"
        if m == 7:  # deep nesting
            d = self.r.choice([100, 127, 129, 1000, 50_000])
            return raw.replace(b'"specversion"', b'"data":' + b"[" * d + b"]" * d + b',"specversion"', 1)
        if m == 8:
            return raw.replace(b'"1.0"', b"NaN", 1)
        if m == 9:
            return raw.replace(b'"specversion"', b'"x":1e99999,"specversion"', 1)
        return b" \t\n" + raw + b"\n"

    def structured(self):
        e = self.event()
        if self.r.random() < 0.85:
            e = self.mutate_obj(e)
        obj = e
        if self.r.random() < 0.05:
            obj = self.r.choice([[e], "string", 5, None, [], {}])
        ctype = b"application/cloudevents+json"
        if self.r.random() < 0.2:
            ctype = self.r.choice(["application/cloudevents+json; charset=utf-8", "APPLICATION/CLOUDEVENTS+JSON",
                                   "application/cloudevents+json; charset=latin1", "application/cloudevents+xml",
                                   "application/cloudevents", "application/cloudevents+json;;",
                                   "application/cloudevents+json ; charset=UTF-8"]).encode()
        headers = [(b"content-type", ctype)]
        if self.r.random() < 0.1:  # stray binary-mode headers must not matter
            headers += [(b"ce-id", b"stray"), (b"ce-specversion", b"9.9")]
        return "structured", headers, self.serialize(obj)

    def batch(self):
        items = []
        for _ in range(self.r.choice([0, 1, 2, 5, 20, 50])):
            c = self.r.random()
            if c < 0.6:
                items.append(self.event())
            elif c < 0.85:
                items.append(self.mutate_obj(self.event()))
            else:
                items.append(self.r.choice(WEIRD_JSON + [[self.event()]]))
        obj = items
        c = self.r.random()
        if c < 0.05:
            obj = self.event()  # an object, not an array
        elif c < 0.08:
            obj = [self.event() for _ in range(3000)]
        ctype = b"application/cloudevents-batch+json"
        if self.r.random() < 0.1:
            ctype = self.r.choice([b"application/cloudevents-batch+json; charset=utf-8",
                                   b"APPLICATION/CLOUDEVENTS-BATCH+JSON", b"application/cloudevents-batch+xml"])
        return "batch", [(b"content-type", ctype)], self.serialize(obj)

    def random_body(self):
        headers = [(b"content-type", self.r.choice(CONTENT_TYPES).encode())]
        if self.r.random() < 0.5:
            headers += [(b"ce-" + self.r.choice(RESERVED).encode(), self.weird_value()) for _ in range(self.r.randint(0, 6))]
        return "random", headers, self.rbytes(0, 4000)


def build(g: Gen, port: int):
    """Returns (kind, raw request bytes, method, fresh_connection, expect_slow)."""
    r = g.r
    c = r.random()
    if c < 0.35:
        kind, headers, body = g.binary()
    elif c < 0.65:
        kind, headers, body = g.structured()
    elif c < 0.85:
        kind, headers, body = g.batch()
    else:
        kind, headers, body = g.random_body()
    method, path, host = b"POST", b"/default/default", f"127.0.0.1:{port}".encode()
    fresh, slow = False, False
    framing = "content-length"
    p = r.random()
    if p < 0.03:
        method = r.choice([b"GET", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"HEAD", b"post", b"FOO"])
        kind += "+method"
    elif p < 0.06:
        path = r.choice([b"/default/missing", b"/Default/default", b"/default/default/", b"/default/default?x=1",
                         b"/%64efault/default", b"/default/de%00fault", b"//", b"/", b"/" + b"a" * 5000,
                         b"/default/default#frag", b"/default/%ff", b"/../default/default", b"*"])
        kind += "+path"
    elif p < 0.08:
        host = r.choice([b"default.default.example.com", b"nope.default.example.com", b"", b"[::1", b"a" * 300,
                         b"127.0.0.1:1", b"x.y.z.example.com:80"])
        kind += "+host"
    elif p < 0.10:
        framing = "chunked"
        kind += "+chunked"
    elif p < 0.11:
        framing = "broken-chunked"
        kind += "+broken-chunked"
        fresh = True
    elif p < 0.113:
        framing = "short-body"  # Content-Length larger than what is sent: expect 408 after the timeout
        kind += "+short-body"
        fresh, slow = True, True
    elif p < 0.12:
        framing = "long-body"  # more bytes than Content-Length: the rest is parsed as the next request
        kind += "+long-body"
        fresh = True
    elif p < 0.14:
        kind += "+proto"
        fresh = True
        variant = r.randrange(7)
        if variant == 0:
            return kind, b"POST /default/default HTTP/1.0\r\ncontent-length: 0\r\n\r\n", "POST", True, False
        if variant == 1:
            return kind, (b"POST /default/default HTTP/1.1\r\nHost: a\r\nHost: b\r\ncontent-length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body), "POST", True, False
        if variant == 2:
            return kind, (b"POST http://127.0.0.1:" + str(port).encode() + b"/default/default HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
                          + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body), "POST", True, False
        if variant == 3:
            return kind, g.rbytes(1, 300) + b"\r\n\r\n", "?", True, False
        if variant == 4:
            return kind, (b"POST /default/default HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"), "POST", True, False
        if variant == 5:
            return kind, (b"POST /default/default HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"), "POST", True, False
        headers.append((b"expect", b"100-continue"))
    lines = [method + b" " + path + b" HTTP/1.1", b"host: " + host]
    lines += [k + b": " + v for k, v in headers]
    if framing == "content-length":
        lines.append(b"content-length: " + str(len(body)).encode())
        data = body
    elif framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
        data, i = b"", 0
        while i < len(body):
            n = r.randint(1, 512)
            data += format(len(body[i:i + n]), "x").encode() + b"\r\n" + body[i:i + n] + b"\r\n"
            i += n
        data += b"0\r\n\r\n"
    elif framing == "broken-chunked":
        lines.append(b"transfer-encoding: chunked")
        data = r.choice([b"zz\r\n" + body + b"\r\n0\r\n\r\n", b"5\r\nab\r\n0\r\n\r\n", b"ffffffffffffffffff\r\nx\r\n",
                         format(len(body) + 10, "x").encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"])
    elif framing == "short-body":
        lines.append(b"content-length: " + str(len(body) + 100).encode())
        data = body
    else:
        lines.append(b"content-length: " + str(max(0, len(body) - 5)).encode())
        data = body
    return kind, b"\r\n".join(lines) + b"\r\n\r\n" + data, method.decode("latin-1"), fresh, slow


class Conn:
    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def open(self):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def read_response(self, method):
        while True:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue: the final answer follows
            break
        body = b""
        if method != "HEAD" and status not in (204, 304):
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    while b"\r\n" not in self.buf:
                        self._fill()
                    line, _, self.buf = self.buf.partition(b"\r\n")
                    n = int(line.split(b";")[0], 16)
                    while len(self.buf) < n + 2:
                        self._fill()
                    body += self.buf[:n]
                    self.buf = self.buf[n + 2:]
                    if n == 0:
                        break
            elif "content-length" in headers:
                n = int(headers["content-length"])
                while len(self.buf) < n:
                    self._fill()
                body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body


def fuzz(port, count, seed, out):
    g = Gen(random.Random(seed))
    res = {"seed": seed, "count": count, "statuses": {}, "by_kind": {}, "no_response": 0, "timeouts": 0,
           "send_errors": 0, "bad_5xx": [], "no_response_examples": [], "timeout_examples": [],
           "accepted_requests": 0, "retry_after_503": 0, "connects": 0, "by_variant": {}}
    conn = Conn(port)
    log = open(os.environ["FUZZ_LOG"], "w") if os.environ.get("FUZZ_LOG") else None
    started = time.monotonic()
    for i in range(count):
        kind, raw, method, fresh, slow = build(g, port)
        base = kind.split("+")[0]
        for attempt in (0, 1):
            reused = not (fresh or conn.sock is None)
            if not reused:
                conn.open()
                res["connects"] += 1
            outcome = None
            try:
                conn.sock.settimeout(10 if slow else 8)
                send_failed = False
                try:
                    conn.sock.sendall(raw)
                except OSError:
                    send_failed = True
                    res["send_errors"] += 1  # the gateway may answer early (413/431) and close
                status, headers, body = conn.read_response(method)
                outcome = str(status)
                if log:
                    log.write(json.dumps({"i": i, "kind": kind, "status": status, "response": body[:300].decode("latin-1"),
                                          "request": raw[:3000].decode("latin-1")}) + "\n")
                if status >= 500:
                    if status == 503 and "retry-after" in headers:
                        res["retry_after_503"] += 1
                    else:
                        res["bad_5xx"].append({"i": i, "kind": kind, "status": status, "headers": headers,
                                               "body": body[:300].decode("latin-1"), "request": raw[:1500].decode("latin-1")})
                if status == 202:
                    res["accepted_requests"] += 1
                if headers.get("connection", "").lower() == "close" or fresh or send_failed:
                    conn.close()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused and attempt == 0:
                    # A kept-alive connection the server had already closed: not this request's fault.
                    res["stale_connection_retries"] = res.get("stale_connection_retries", 0) + 1
                    continue
                outcome = "no-response"
                res["no_response"] += 1
                if len(res["no_response_examples"]) < 8:
                    res["no_response_examples"].append({"i": i, "kind": kind, "request": raw[:400].decode("latin-1")})
            except socket.timeout:
                outcome = "timeout"
                res["timeouts"] += 1
                if len(res["timeout_examples"]) < 8:
                    res["timeout_examples"].append({"i": i, "kind": kind, "request": raw[:400].decode("latin-1")})
                conn.close()
            except (ValueError, IndexError) as e:
                outcome = "unparsable-response"
                res["bad_5xx"].append({"i": i, "kind": kind, "status": f"unparsable response: {e}",
                                       "request": raw[:600].decode("latin-1")})
                conn.close()
            except OSError as e:  # connection refused: the gateway is gone
                outcome = f"oserror-{type(e).__name__}"
                res["gateway_unreachable"] = f"{type(e).__name__}: {e} at request {i}"
            break
        if outcome.startswith("oserror"):
            res["statuses"][outcome] = res["statuses"].get(outcome, 0) + 1
            break
        res["statuses"][outcome] = res["statuses"].get(outcome, 0) + 1
        k = res["by_kind"].setdefault(base, {})
        k[outcome] = k.get(outcome, 0) + 1
        if "+" in kind:
            v = res["by_variant"].setdefault(kind.split("+", 1)[1], {})
            v[outcome] = v.get(outcome, 0) + 1
        if (i + 1) % 1000 == 0:
            print(f"  fuzz: {i + 1}/{count} sent", file=sys.stderr, flush=True)
    conn.close()
    if log:
        log.close()
    res["seconds"] = round(time.monotonic() - started, 2)
    with open(out, "w") as f:
        json.dump(res, f)


def valid(port, n, prefix, sub_url, wait, out):
    res = {"published": 0, "accepted": 0, "statuses": {}, "missing": []}
    ids = [f"{prefix}-{i}" for i in range(n)]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i, ce_id in enumerate(ids):
        body = json.dumps({"i": i}).encode()
        c.request("POST", "/default/default", body=body, headers={
            "ce-specversion": "1.0", "ce-id": ce_id, "ce-source": "fuzz/valid", "ce-type": "fuzz.valid",
            "content-type": "application/json"})
        r = c.getresponse()
        r.read()
        res["published"] += 1
        res["statuses"][str(r.status)] = res["statuses"].get(str(r.status), 0) + 1
        if r.status == 202:
            res["accepted"] += 1
    c.close()
    host, _, sport = sub_url.split("://", 1)[1].rstrip("/").partition(":")
    deadline = time.monotonic() + wait
    start = time.monotonic()
    seen = set()
    total_events = 0
    while True:
        try:
            s = http.client.HTTPConnection(host, int(sport), timeout=5)
            s.request("GET", "/events")
            events = json.loads(s.getresponse().read())
            s.close()
            total_events = len(events)
            seen = {e.get("id") for e in events if isinstance(e, dict)}
        except (OSError, http.client.HTTPException, ValueError):
            pass
        missing = [i for i in ids if i not in seen]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    res["missing"] = missing
    res["waited"] = round(time.monotonic() - start, 2)
    res["subscriber_events"] = total_events
    with open(out, "w") as f:
        json.dump(res, f)


def summary(fuzz_json, valid_json, alive, ingested_events, trigger_json):
    with open(fuzz_json) as f:
        fz = json.load(f)
    with open(valid_json) as f:
        va = json.load(f)
    fails = []
    print(f"fuzz results (seed {fz['seed']}, {fz['count']} requests, {fz['seconds']} s, {fz['connects']} connections)")
    order = sorted(fz["statuses"].items(), key=lambda kv: (not kv[0].isdigit(), kv[0]))
    print("  status counts: " + ", ".join(f"{k}: {v}" for k, v in order))
    for kind, st in sorted(fz["by_kind"].items()):
        print(f"    {kind:<11} " + ", ".join(f"{k}: {v}" for k, v in sorted(st.items())))
    for var, st in sorted(fz["by_variant"].items()):
        print(f"    +{var:<14} " + ", ".join(f"{k}: {v}" for k, v in sorted(st.items())))
    print(f"  202 responses {fz['accepted_requests']}; 503 with Retry-After {fz['retry_after_503']}; "
          f"no response {fz['no_response']}; timeouts {fz['timeouts']}; early-close send errors {fz['send_errors']}; "
          f"stale keep-alive retries {fz.get('stale_connection_retries', 0)}")
    for ex in fz["no_response_examples"][:3]:
        print(f"    no response e.g. #{ex['i']} {ex['kind']}: {ex['request'][:160]!r}")
    for ex in fz["timeout_examples"][:3]:
        print(f"    timeout e.g. #{ex['i']} {ex['kind']}: {ex['request'][:160]!r}")
    if fz["bad_5xx"]:
        fails.append(f"{len(fz['bad_5xx'])} 5xx answers (other than 503 + Retry-After)")
        for ex in fz["bad_5xx"][:5]:
            print(f"    5xx #{ex['i']} {ex['kind']} status {ex['status']} body {ex.get('body', '')!r}")
            print(f"      request {ex['request'][:700]!r}")
    if "gateway_unreachable" in fz:
        fails.append(f"gateway unreachable during fuzzing: {fz['gateway_unreachable']}")
    if fz["timeouts"] > 0:
        slow_only = all("+short-body" in ex["kind"] for ex in fz["timeout_examples"])
        print(f"  note: {fz['timeouts']} requests got no answer within the client timeout"
              + (" (all short-body requests)" if slow_only else ""))
    if alive != "yes":
        fails.append("gateway process died or stopped answering /healthz")
    print(f"  valid events: {va['accepted']}/{va['published']} accepted {va['statuses']}, "
          f"{va['published'] - len(va['missing'])} delivered within {va['waited']} s")
    if va["accepted"] != va["published"]:
        fails.append(f"valid events refused: {va['statuses']}")
    if va["missing"]:
        fails.append(f"{len(va['missing'])} valid events not delivered, e.g. {va['missing'][:5]}")
    print(f"  ingest: {ingested_events} events stored (tidegate_ingest_events_total); "
          f"subscriber decoded {va['subscriber_events']}; trigger {trigger_json}")
    try:
        stored = int(float(ingested_events))
        if va["subscriber_events"] < stored:
            if os.environ.get("STRICT_DELIVERY"):
                fails.append("stored events the subscriber did not record (STRICT_DELIVERY)")
            print(f"  WARN: {stored - va['subscriber_events']} stored events were not (yet) recorded by the "
                  f"subscriber (undeliverable, still retrying, or sample-service could not decode them)")
    except ValueError:
        pass
    for f in fails:
        print(f"  FAIL: {f}")
    if not fails:
        print("  OK")
    return 1 if fails else 0


def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "summary":
        return summary(*a)
    if cmd == "fuzz":
        fuzz(int(a[0]), int(a[1]), int(a[2]), a[3])
        return 0
    if cmd == "valid":
        valid(int(a[0]), int(a[1]), a[2], a[3], float(a[4]), a[5])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
