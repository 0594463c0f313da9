"""Drive one Python shim worker process over its real pipes, without the dispatcher, to
measure the shim's own cost per request (CPU µs of the worker process / request).

    python3 bench/tools/shimbench.py [--kind worker|wsgi|asgi] [--target mod:attr]
                                     [-n 20000] [--depth 1] [--profile out.prof]

The parent writes CONFIG, waits for HELLO, then keeps `depth` REQUEST frames outstanding
(depth 1: one at a time, like credits = 1) and reads the replies. Prints requests/s of the
round trip and the worker's CPU time per request from /proc (utime+stime).
`--profile` runs the worker under cProfile and writes its stats (for `python -m pstats`).
"""

import argparse
import json
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HEADER = struct.Struct(">2sBBQII")


def frame(ftype, rid, meta, body=b""):
    m = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    return HEADER.pack(b"RW", 1, ftype, rid, len(m), len(body)) + m + body


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="worker", choices=["worker", "wsgi", "asgi"])
    ap.add_argument("--target", default=None)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--path", default="/api/hello")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--ws", type=int, default=0,
                    help="WebSocket echo instead: this many sockets (WS_OPEN to --path /ws), "
                         "each keeping --depth 64-byte text messages in flight")
    args = ap.parse_args()
    target = args.target or {"worker": "hello_worker:HelloWorker", "wsgi": "wsgi_hello:app",
                             "asgi": "asgi_hello:app"}[args.kind]
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Move both ends above 4 first: a pipe may already sit on fd 3 or 4.
        a, b = os.dup(req_r), os.dup(rep_w)
        os.dup2(a, 3)
        os.dup2(b, 4)
        os.closerange(5, 256)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "workers"),
                                             os.path.join(ROOT, "bench", "apps")])
        argv = [sys.executable]
        if args.profile:
            argv += ["-m", "cProfile", "-o", args.profile]
            argv += ["-m", "rustworkers", args.kind, target]
        else:
            argv += ["-m", "rustworkers", args.kind, target]
        os.execve(sys.executable, argv, env)
    os.close(req_r)
    os.close(rep_w)
    os.write(req_w, frame(1, 0, {"protocol": 2, "pool": "bench", "worker_id": 0,
                                 "heartbeat_interval": 1.0, "timeout": 30.0}))
    buf = bytearray()

    def read_frames():
        chunk = os.read(rep_r, 1 << 16)
        if not chunk:
            raise SystemExit("worker exited")
        buf.extend(chunk)
        out = []
        while len(buf) >= 20:
            _, _, t, rid, ml, bl = HEADER.unpack_from(buf)
            total = 20 + ml + bl
            if len(buf) < total:
                break
            out.append((t, rid, bytes(buf[20:20 + ml]), bytes(buf[20 + ml:total])))
            del buf[:total]
        return out

    credits = 0
    while not credits:
        for t, rid, meta, body in read_frames():
            if t == 16:
                credits = json.loads(meta).get("credits", 1)
    if args.ws:
        return ws_bench(args, target, pid, req_w, read_frames)
    meta = {"method": "GET", "path": args.path, "query": None,
            "headers": [["host", "127.0.0.1"], ["user-agent", "wrk"]],
            "remote_addr": "127.0.0.1", "remote_port": 5555, "http_version": "1.1",
            "x_request_id": "x", "forwarded": False}
    reqs = [frame(2, i + 1, meta) for i in range(args.n)]
    depth = max(1, args.depth)
    sent = done = 0
    statuses = {}
    t0 = time.perf_counter()
    c0 = cpu_ticks(pid)
    while sent < min(depth, args.n):
        os.write(req_w, reqs[sent])
        sent += 1
    while done < args.n:
        for t, rid, m, body in read_frames():
            if t == 17:
                done += 1
                st = json.loads(m)["status"]
                statuses[st] = statuses.get(st, 0) + 1
                if sent < args.n:
                    os.write(req_w, reqs[sent])
                    sent += 1
    elapsed, cpu_us = stop_worker(pid, req_w, t0, c0, args.n)
    print("%s %s: %d requests in %.2f s = %.0f req/s; worker CPU %.1f us/request; statuses %s"
          % (args.kind, target, args.n, elapsed, args.n / elapsed, cpu_us, statuses))


def stop_worker(pid, req_w, t0, c0, count):
    """End the measured run: -> (seconds elapsed, worker CPU µs per item); then STOP the
    worker, close its pipe and reap it."""
    elapsed = time.perf_counter() - t0
    cpu_us = (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / count * 1e6
    os.write(req_w, frame(3, 0, None))
    os.close(req_w)
    os.waitpid(pid, 0)
    return elapsed, cpu_us


def ws_bench(args, target, pid, req_w, read_frames):
    open_meta = {"method": "GET", "path": "/ws", "query": None,
                 "headers": [["host", "127.0.0.1"], ["upgrade", "websocket"]],
                 "remote_addr": "127.0.0.1", "remote_port": 5555, "http_version": "1.1",
                 "x_request_id": "x", "forwarded": False, "context": None, "subprotocols": []}
    socks = list(range(1, args.ws + 1))
    for sid in socks:
        os.write(req_w, frame(6, sid, open_meta))
    accepted = set()
    while len(accepted) < len(socks):
        for t, rid, m, body in read_frames():
            if t == 25:
                accepted.add(rid)
    msgs = {sid: frame(7, sid, {"text": True}, b"x" * 64) for sid in socks}
    total = args.n
    sent = done = 0
    t0 = time.perf_counter()
    c0 = cpu_ticks(pid)
    batch = []
    for sid in socks:
        for _ in range(max(1, args.depth)):
            if sent < total:
                batch.append(msgs[sid])
                sent += 1
    os.write(req_w, b"".join(batch))
    while done < total:
        out = []
        for t, rid, m, body in read_frames():
            if t == 26:
                done += 1
                if sent < total:
                    out.append(msgs[rid])
                    sent += 1
        if out:
            os.write(req_w, b"".join(out))
    elapsed, cpu_us = stop_worker(pid, req_w, t0, c0, total)
    print("%s %s ws x%d: %d messages in %.2f s = %.0f msg/s; worker CPU %.1f us/message"
          % (args.kind, target, args.ws, total, elapsed, total / elapsed, cpu_us))


if __name__ == "__main__":
    main()
