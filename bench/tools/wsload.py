"""WebSocket echo load: round trips per second against an echo endpoint.

    python3 wsload.py ws://127.0.0.1:PORT/ws [--conns 64] [--procs 2] [--duration 5] [--size 64]

Stdlib only, raw sockets: each of --procs processes (fork) opens its share of --conns
connections (HTTP/1.1 upgrade by hand), then, for --duration seconds, keeps exactly one
message in flight per connection: send a masked text frame of --size bytes (encoded once
per connection), wait for the echo, check it, send the next one. One epoll selector per
process, no asyncio, no per-message allocation beyond the recv buffer: the client costs a
few µs of CPU per round trip (its CPU time over the window is reported, so a saturated
client shows). Pings are answered with pongs. Every loop is bounded in time and count.

Prints one JSON line: messages (round trips completed inside the window), seconds,
msg_per_s, errors (failed handshakes, closed or broken connections, wrong echoes),
p50_ms / p99_ms (round-trip time), client_cpu_s (user+sys of the load processes over the
window), procs, conns.
"""

import argparse
import array
import base64
import json
import multiprocessing
import os
import selectors
import socket
import sys
import time
import urllib.parse

MAX_LOOP = 100_000_000  # hard cap on select() turns per process (the deadline ends the loop first)


def mask(payload, key):
    return bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def client_frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2), FIN set."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


def server_reply(payload):
    """The unmasked text frame an echo server sends back."""
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    if n < 65536:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + payload


def handshake(host, port, path, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    s.sendall(req.encode())
    buf = b""
    for _ in range(64):  # bounded: the head is small
        if b"\r\n\r\n" in buf:
            break
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 101"):
        s.close()
        raise OSError(f"handshake failed: {head[:80]!r}")
    s.setblocking(False)
    return s, rest


class Conn:
    __slots__ = ("sock", "buf", "frame", "reply", "t0", "alive")

    def __init__(self, sock, rest, payload):
        self.sock = sock
        self.buf = rest
        self.frame = client_frame(0x1, payload)
        self.reply = server_reply(payload)
        self.t0 = 0.0
        self.alive = True


def run_proc(url, nconns, size, timeout, pipe):
    u = urllib.parse.urlsplit(url)
    host, port, path = u.hostname, u.port or 80, (u.path or "/")
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    conns, errors = [], 0
    for _ in range(nconns):
        try:
            s, rest = handshake(host, port, path, timeout)
            conns.append(Conn(s, rest, payload))
        except OSError:
            errors += 1
    pipe.send(("ready", len(conns), errors))
    msg = pipe.recv()  # ("go", start, end) on the shared CLOCK_MONOTONIC
    if msg[0] != "go":
        return
    _, start, end = msg
    sel = selectors.EpollSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    rtts = array.array("d")
    count = 0
    now = time.monotonic()
    if start > now:
        time.sleep(start - now)
    cpu0 = os.times()
    perf = time.perf_counter
    for c in conns:
        try:
            c.t0 = perf()
            c.sock.send(c.frame)
        except OSError:
            c.alive = False
            errors += 1
    turns = 0
    while turns < MAX_LOOP:
        turns += 1
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in sel.select(min(0.1, end - now)):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                errors += 1
                c.alive = False
                sel.unregister(c.sock)
                continue
            if not c.buf and data == c.reply:  # the usual case: exactly one echo
                t = perf()
                rtts.append(t - c.t0)
                count += 1
                c.t0 = t
                try:
                    c.sock.send(c.frame)
                except OSError:
                    errors += 1
                    c.alive = False
                    sel.unregister(c.sock)
                continue
            c.buf += data
            ok = True
            for _ in range(1024):  # frames in this buffer; bounded
                b = c.buf
                if len(b) < 2:
                    break
                op, n, off = b[0] & 0x0F, b[1] & 0x7F, 2
                if n == 126:
                    if len(b) < 4:
                        break
                    n, off = int.from_bytes(b[2:4], "big"), 4
                elif n == 127:
                    if len(b) < 10:
                        break
                    n, off = int.from_bytes(b[2:10], "big"), 10
                if len(b) < off + n:
                    break
                frame, c.buf = b[: off + n], b[off + n :]
                if op in (0x1, 0x2):
                    if frame != c.reply:
                        ok = False
                        break
                    t = perf()
                    rtts.append(t - c.t0)
                    count += 1
                    c.t0 = t
                    c.sock.send(c.frame)
                elif op == 0x9:  # ping -> pong with the same payload
                    c.sock.send(client_frame(0xA, frame[off:]))
                elif op == 0x8:  # the server closed
                    ok = False
                    break
            if not ok:
                errors += 1
                c.alive = False
                sel.unregister(c.sock)
    cpu1 = os.times()
    for c in conns:  # close politely: 1000, then drop the socket
        try:
            if c.alive:
                c.sock.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        except OSError:
            pass
        c.sock.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    pipe.send(("done", count, errors, cpu, rtts.tobytes()))


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=10.0, help="connect/handshake timeout per connection")
    args = ap.parse_args()
    procs = max(1, min(args.procs, args.conns))
    ctx = multiprocessing.get_context("fork")
    workers = []
    for i in range(procs):
        share = args.conns // procs + (1 if i < args.conns % procs else 0)
        parent, child = ctx.Pipe()
        p = ctx.Process(target=run_proc, args=(args.url, share, args.size, args.timeout, child), daemon=True)
        p.start()
        child.close()
        workers.append((p, parent))
    errors, opened = 0, 0
    setup_deadline = time.monotonic() + args.timeout * 2 + 5
    for p, pipe in workers:
        if not pipe.poll(max(0.0, setup_deadline - time.monotonic())):
            print(json.dumps({"error": "a load process did not connect in time"}))
            for q, _ in workers:
                q.kill()
            return 1
        _, n, e = pipe.recv()
        opened += n
        errors += e
    start = time.monotonic() + 0.05
    end = start + args.duration
    for _, pipe in workers:
        pipe.send(("go", start, end))
    count, cpu, rtts = 0, 0.0, array.array("d")
    for p, pipe in workers:
        if not pipe.poll(max(0.0, end - time.monotonic()) + 30):
            print(json.dumps({"error": "a load process did not report in time"}))
            for q, _ in workers:
                q.kill()
            return 1
        _, c, e, u, raw = pipe.recv()
        count += c
        errors += e
        cpu += u
        rtts.frombytes(raw)
    for p, _ in workers:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
    vals = sorted(rtts)
    print(json.dumps({
        "messages": count,
        "seconds": args.duration,
        "msg_per_s": count / args.duration,
        "errors": errors,
        "conns_open": opened,
        "p50_ms": round(pct(vals, 50) * 1000, 3),
        "p99_ms": round(pct(vals, 99) * 1000, 3),
        "client_cpu_s": round(cpu, 3),
        "procs": procs,
        "conns": args.conns,
        "size": args.size,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
