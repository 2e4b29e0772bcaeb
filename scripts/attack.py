#!/usr/bin/env python3
"""Bounded connection-level attacks on a local token-authority (issue 14).

Starts nothing: scripts/attack.sh builds and starts a release server (with
a config of two callers and an admin port) and runs this. Loopback only;
every attack stops by itself (ATTACK_SECONDS each, default 15 s), the whole
run in a few minutes at most. Python 3 standard library only: HTTP/2 frames
are written by hand.

While each attack runs (in a separate process, so it does not share the
GIL with the measurements), a valid caller (its own loopback address)
requests tokens about 50 times a second over a keep-alive HTTP/1.1
connection, admin probes (/healthz, /readyz) run twice a second on new
connections, and the server's RSS is sampled every 100 ms. Printed per
attack: RSS peak, the valid caller's 200s vs others, its p99 latency, and
the probes answered.
"""

import argparse
import http.client
import multiprocessing
import os
import selectors
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"


# ---------------------------------------------------------------- HTTP/2 bits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(pairs=()):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_literal(name, value):
    # Literal header field without indexing, new name, no Huffman.
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name) + s(value)


def headers_block(method, path, extra=()):
    hs = [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", b"t")]
    hs += list(extra)
    return b"".join(hpack_literal(n, v) for n, v in hs)


def headers_frame(stream, block, end_stream):
    return frame(1, 0x4 | (0x1 if end_stream else 0), stream, block)


# ---------------------------------------------------------------- attacker side

class Conns:
    """Many non-blocking attacker sockets from spread loopback sources."""

    def __init__(self, port, sources):
        self.port = port
        self.sources = sources
        self.sel = selectors.DefaultSelector()
        self.socks = {}
        self.opened = 0
        self.closed_by_server = 0
        self.i = 0

    def open(self, on_open, n):
        for _ in range(n):
            src = self.sources[self.i % len(self.sources)]
            self.i += 1
            s = socket.socket()
            try:
                s.bind((src, 0))
                s.setblocking(False)
                s.connect_ex((HOST, self.port))
            except OSError:
                s.close()
                continue
            self.socks[s.fileno()] = [s, {}]
            self.sel.register(s, selectors.EVENT_READ)
            self.opened += 1
            try:
                on_open(s, self.socks[s.fileno()][1])
            except OSError:
                pass

    def drain(self, timeout=0.05, read=True):
        """Reads what the server sent (if `read`); forgets closed sockets."""
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(65536) if read else s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_by_server += 1
                self.forget(s)
            elif not read:
                # A zero-window reader never reads: stop watching it.
                self.sel.unregister(s)

    def forget(self, s):
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        self.socks.pop(s.fileno(), None)
        s.close()

    def send_all(self, fn):
        for fd, (s, st) in list(self.socks.items()):
            try:
                fn(s, st)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.forget(s)

    def close(self):
        for s, _ in list(self.socks.values()):
            s.close()
        self.socks.clear()


def spread(prefix, n):
    return [f"{prefix}.{i}" for i in range(1, n + 1)]


def attack_h2_bodies(port, seconds, path, conns=300, streams=256, sources=None, extra=()):
    """HTTP/2: streams with unfinished request bodies, refilled each second."""
    c = Conns(port, sources or spread("127.0.2", 50))
    block = headers_block(b"POST", path, [(b"content-type", b"application/json")] + list(extra))

    def start(s, st):
        st["next"] = 1
        s.send(PREFACE + settings())

    def refill(s, st):
        out = []
        for _ in range(min(streams, 64)):
            sid = st["next"]
            if sid > 2**31 - 1:
                break
            st["next"] += 2
            out.append(headers_frame(sid, block, False) + frame(0, 0, sid, b'{"serv'))
        s.send(b"".join(out))

    c.open(start, conns)
    end = time.time() + seconds
    next_refill = 0.0
    while time.time() < end:
        if time.time() >= next_refill:
            c.send_all(refill)
            missing = conns - len(c.socks)
            if missing > 0:
                c.open(start, missing)
            next_refill = time.time() + 1.0
        c.drain()
    c.close()
    return f"{c.opened} conns opened, {c.closed_by_server} closed by the server"


def attack_h1_bodies(port, seconds, path, key, conns=300, trickle=False, sources=None):
    """HTTP/1.1: request bodies that never complete (or trickle a byte a second)."""
    c = Conns(port, sources or spread("127.0.3", 50))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: 60000\r\n\r\n{{"
    ).encode()

    def start(s, st):
        s.send(head)

    c.open(start, conns)
    end = time.time() + seconds
    next_tick = 0.0
    while time.time() < end:
        if time.time() >= next_tick:
            if trickle:
                c.send_all(lambda s, st: s.send(b" "))
            missing = conns - len(c.socks)
            if missing > 0:
                c.open(start, missing)
            next_tick = time.time() + 1.0
        c.drain()
    c.close()
    return f"{c.opened} conns opened, {c.closed_by_server} closed by the server"


def attack_silent(port, seconds, conns, sources, payload=b""):
    """TCP connections that send nothing (or only `payload`), reopened when closed."""
    c = Conns(port, sources)

    def start(s, st):
        if payload:
            s.send(payload)

    end = time.time() + seconds
    next_tick = 0.0
    while time.time() < end:
        if time.time() >= next_tick:
            missing = conns - len(c.socks)
            if missing > 0:
                c.open(start, min(missing, 500))
            next_tick = time.time() + 0.5
        c.drain()
    c.close()
    return f"{c.opened} conns opened, {c.closed_by_server} closed by the server"


def attack_zero_window(port, seconds, conns=300, streams=64):
    """HTTP/2 GET /metrics with a zero stream window; never reads."""
    c = Conns(port, spread("127.0.4", 50))
    block = headers_block(b"GET", b"/metrics")

    def start(s, st):
        st["next"] = 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.send(PREFACE + settings([(4, 0)]))

    def refill(s, st):
        out = []
        for _ in range(streams):
            sid = st["next"]
            st["next"] += 2
            out.append(headers_frame(sid, block, True))
        s.send(b"".join(out))

    c.open(start, conns)
    end = time.time() + seconds
    next_refill = 0.0
    while time.time() < end:
        if time.time() >= next_refill:
            c.send_all(refill)
            missing = conns - len(c.socks)
            if missing > 0:
                c.open(start, missing)
            next_refill = time.time() + 1.0
        c.drain(read=False)
    c.close()
    return f"{c.opened} conns opened, {c.closed_by_server} closed by the server"


def run_attack(name, port, seconds, attacker_key, q):
    try:
        if name == "h2 unfinished bodies, health route (300 conns x 256 streams)":
            r = attack_h2_bodies(port, seconds, b"/grpc.health.v1.Health/Check")
        elif name == "h2 unfinished bodies, token route (attacker's own key)":
            r = attack_h2_bodies(
                port, seconds, b"/agora.token.v1.TokenService/BuildRtcToken",
                extra=[(b"authorization", f"Bearer {attacker_key}".encode())])
        elif name == "h1 unfinished bodies, token route (attacker's own key)":
            r = attack_h1_bodies(port, seconds, "/agora.token.v1.TokenService/BuildRtcToken", attacker_key)
        elif name == "silent TCP connections (5000 from 100 addresses)":
            r = attack_silent(port, seconds, 5000, spread("127.0.5", 100))
        elif name == "partial HTTP/2 prefaces (2000)":
            r = attack_silent(port, seconds, 2000, spread("127.0.6", 50), payload=b"PRI * HTTP/2.0\r\n")
        elif name == "slow bodies, health route (500 conns, 1 byte/s)":
            r = attack_h1_bodies(port, seconds, "/grpc.health.v1.Health/Check", None, conns=500,
                                 trickle=True, sources=spread("127.0.7", 50))
        elif name == "many connections from one address (2000)":
            r = attack_silent(port, seconds, 2000, ["127.0.8.1"])
        elif name == "zero-window h2 readers on /metrics (300 conns x 64 streams/s)":
            r = attack_zero_window(port, seconds)
        elif name == "none (baseline)":
            time.sleep(seconds)
            r = ""
        else:
            r = "unknown attack"
    except Exception as e:  # reported, not hidden
        r = f"attacker error: {e!r}"
    q.put(r)


ATTACKS = [
    "none (baseline)",
    "h2 unfinished bodies, health route (300 conns x 256 streams)",
    "h2 unfinished bodies, token route (attacker's own key)",
    "h1 unfinished bodies, token route (attacker's own key)",
    "silent TCP connections (5000 from 100 addresses)",
    "partial HTTP/2 prefaces (2000)",
    "slow bodies, health route (500 conns, 1 byte/s)",
    "many connections from one address (2000)",
    "zero-window h2 readers on /metrics (300 conns x 64 streams/s)",
]


# ---------------------------------------------------------------- measurements

class Measure:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()
        self.stop = threading.Event()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.rss_peak = 0
            self.ok = 0
            self.other = {}
            self.lat = []
            self.probes_ok = 0
            self.probes = 0

    def rss(self):
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.args.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            with self.lock:
                                self.rss_peak = max(self.rss_peak, kb)
            except OSError:
                pass
            time.sleep(0.1)

    def caller(self):
        path = "/api/agora/token?channelName=c&uid=1"
        hdrs = {"Authorization": f"Bearer {self.args.key}"}
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self.args.port, timeout=5,
                                                  source_address=("127.0.0.2", 0))
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=hdrs)
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = None
            dt = (time.perf_counter() - t0) * 1000
            with self.lock:
                if status == 200:
                    self.ok += 1
                else:
                    self.other[status] = self.other.get(status, 0) + 1
                self.lat.append(dt)
            time.sleep(0.02)

    def probes_loop(self):
        while not self.stop.is_set():
            for path in ("/healthz", "/readyz"):
                good = False
                try:
                    c = http.client.HTTPConnection(HOST, self.args.admin_port, timeout=2,
                                                   source_address=("127.0.0.250", 0))
                    c.request("GET", path)
                    good = c.getresponse().status == 200
                    c.close()
                except (OSError, http.client.HTTPException):
                    pass
                with self.lock:
                    self.probes += 1
                    self.probes_ok += int(good)
            time.sleep(0.5)

    def snapshot(self):
        with self.lock:
            lat = sorted(self.lat)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
            return self.rss_peak, self.ok, dict(self.other), p99, self.probes_ok, self.probes


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's pid (for its RSS)")
    ap.add_argument("--key", required=True, help="the valid caller's API key")
    ap.add_argument("--attacker-key", required=True, help="another caller's key, used by the attacker")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("ATTACK_SECONDS", "15")))
    ap.add_argument("--only", default="", help="run only attacks whose name contains this")
    args = ap.parse_args()
    args.seconds = min(args.seconds, 30.0)  # bounded whatever is asked

    m = Measure(args)
    threads = [threading.Thread(target=f, daemon=True) for f in (m.rss, m.caller, m.probes_loop)]
    for t in threads:
        t.start()
    rows = []
    for name in ATTACKS:
        if args.only and args.only not in name:
            continue
        time.sleep(2)  # let the previous attack's connections go
        m.reset()
        q = multiprocessing.Queue()
        p = multiprocessing.Process(target=run_attack, args=(name, args.port, args.seconds, args.attacker_key, q))
        p.start()
        p.join(args.seconds + 30)
        if p.is_alive():
            p.kill()
            note = "attacker killed (overran)"
        else:
            note = q.get() if not q.empty() else ""
        rss, ok, other, p99, pok, pn = m.snapshot()
        rows.append((name, rss, ok, other, p99, pok, pn, note))
        print(f"{name}: RSS peak {rss/1024:.1f} MB, valid 200 {ok} other {other}, "
              f"p99 {p99:.1f} ms, probes {pok}/{pn}; {note}", flush=True)
    m.stop.set()
    print()
    print("| attack | server RSS peak | valid caller: 200 / other | valid caller p99 | admin probes answered | attacker |")
    print("|---|---|---|---|---|---|")
    for name, rss, ok, other, p99, pok, pn, note in rows:
        oth = sum(other.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(other.items(), key=str))})" if other else ""
        print(f"| {name} | {rss/1024:.1f} MB | {ok} / {oth}{detail} | {p99:.1f} ms | {pok}/{pn} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
