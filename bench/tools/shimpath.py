#!/usr/bin/env python3
"""The shim's per-request Python cost, in process and without syscalls: one REQUEST
frame for GET /api/hello through FrameDecoder -> Worker._serve_frame -> the RESPONSE
frame's bytes (a fake transport keeps them), for bench/apps/hello_worker.py (`python =`)
or bench/apps/wsgi_hello.py (`--kind wsgi`).

    python3 bench/tools/shimpath.py                      # the checkout's workers/
    python3 bench/tools/shimpath.py OLD/workers workers  # A/B: interleaved, per round
    python3 bench/tools/shimpath.py --kind wsgi OLD/workers workers

Each figure is the minimum over 30 repeats of 5000 requests (the least disturbed run),
so two shims compare on this noisy machine where whole-process CPU figures do not.
"""

import collections
import importlib
import os
import sys
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = os.path.join(ROOT, "bench", "apps")

META = {"method": "GET", "path": "/api/hello", "query": None, "headers": [["host", "127.0.0.1:8080"]],
        "remote_addr": "127.0.0.1", "remote_port": 5555, "http_version": "1.1",
        "x_request_id": "0123456789abcdef", "forwarded": False, "context": None}


def measure(workers_dir, kind):
    for name in [m for m in sys.modules if m == "rustworkers" or m.startswith("rustworkers.")
                 or m in ("hello_worker", "wsgi_hello")]:
        del sys.modules[name]
    sys.path[:0] = [workers_dir, APPS]
    try:
        P = importlib.import_module("rustworkers.protocol")
        if kind == "wsgi":
            wsgi = importlib.import_module("rustworkers.wsgi")
            make = lambda: wsgi.WsgiWorker(0, app=importlib.import_module("wsgi_hello").app)  # noqa: E731
        else:
            make = lambda: importlib.import_module("hello_worker").HelloWorker(0)  # noqa: E731
    finally:
        del sys.path[:2]

    class Transport:
        broken = False
        written = 0

        def send(self, ftype, rid=0, meta=None, body=b""):
            return self.write(P.encode_frame(ftype, rid, meta, body))

        def write(self, data):
            self.written += len(data)
            return True

    sys.path[:0] = [workers_dir, APPS]
    try:
        worker = make()
    finally:
        del sys.path[:2]
    worker._transport = Transport()
    worker._pid = os.getpid()
    worker._pending = collections.deque()
    worker._build_routes()
    worker.setup()
    worker._credits_sent = 1
    frame = P.encode_frame(P.REQUEST, 7, META, b"")
    decoder = P.FrameDecoder()

    def one():
        decoder.push(frame)
        worker._serve_frame(decoder.next_frame())

    one()
    if not worker._transport.written:
        raise SystemExit("%s: no response was written" % workers_dir)
    return min(timeit.repeat(one, number=5000, repeat=30)) / 5000 * 1e6


def main():
    args = sys.argv[1:]
    kind = "worker"
    if args[:1] == ["--kind"]:
        kind, args = args[1], args[2:]
    dirs = args or [os.path.join(ROOT, "workers")]
    for _ in range(3):
        print("  ".join("%s: %.2f us/request" % (d, measure(os.path.abspath(d), kind)) for d in dirs))


if __name__ == "__main__":
    main()
