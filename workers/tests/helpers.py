"""Test helpers: a worker attached to a real os.pipe() transport, frames read back."""

import fcntl
import json
import os
import select
import subprocess
import sys
import time

from rustworkers import protocol as P
from rustworkers.transport import Transport

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "python")


class Harness:
    """Attach `worker` to a pipe; `serve(...)` feeds one REQUEST, `frames()` reads replies."""

    def __init__(self, worker, build=True):
        self.r, w = os.pipe()
        fl = fcntl.fcntl(self.r, fcntl.F_GETFL)
        fcntl.fcntl(self.r, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.w = w
        self.worker = worker
        self.decoder = P.FrameDecoder()
        worker._transport = Transport(-1, w)
        worker._pid = os.getpid()
        worker.log.sink = worker._log_sink
        worker._credits_sent = 1
        if build:
            worker._build_routes()
            worker.setup()

    def close(self):
        os.close(self.r)
        os.close(self.w)

    def frames(self):
        out = []
        while True:
            try:
                chunk = os.read(self.r, 65536)
            except BlockingIOError:
                return out
            out.extend(self.decoder.feed(chunk))

    def serve(self, rid, method="GET", path="/", query=None, headers=(), body=b"", **extra):
        meta = {"method": method, "path": path, "query": query,
                "headers": [list(h) for h in headers], "remote_addr": "127.0.0.1",
                "remote_port": 40000, "http_version": "1.1", "x_request_id": "x",
                "forwarded": False, "context": None}
        meta.update(extra)
        self.worker._serve_frame(P.Frame(P.REQUEST, rid, meta, body))
        return self.frames()


def response_of(frames, rid=None):
    """The single RESPONSE frame among `frames` as (status, headers dict, body)."""
    resp = [f for f in frames if f.type == P.RESPONSE and (rid is None or f.request_id == rid)]
    assert len(resp) == 1, frames
    f = resp[0]
    return f.meta["status"], {k: v for k, v in f.meta["headers"]}, f.body


def json_of(frames, rid=None):
    status, headers, body = response_of(frames, rid)
    return status, json.loads(body) if body else None


class Proc:
    """`python -m rustworkers KIND TARGET [ARGS]` on real pipes at fds 3/4; `send` frames
    to it, `next` waits (with a deadline) for the frames it answers."""

    def __init__(self, kind, target, extra_path=(), args=(), env=None):
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()

        def arrange():  # in the child: put the pipe ends at fds 3 and 4
            a, b = os.dup(req_r), os.dup(rep_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        env_extra = env
        env = dict(os.environ, RUSTWORKERS_PROTOCOL="1", RUSTWORKERS_REQUEST_FD="3",
                   RUSTWORKERS_REPLY_FD="4", RUSTWORKERS_POOL="items",
                   RUSTWORKERS_WORKER_ID="0",
                   PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "workers"), ROOT,
                                               *extra_path]))
        env.update(env_extra or {})
        self.p = subprocess.Popen([sys.executable, "-m", "rustworkers", kind, target, *args],
                                  cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, preexec_fn=arrange,
                                  pass_fds=(3, 4))
        os.close(req_r)
        os.close(rep_w)
        self.dec = P.FrameDecoder()
        self.queue = []

    def send(self, ftype, rid=0, meta=None, body=b""):
        os.write(self.req_w, P.encode_frame(ftype, rid, meta, body))

    def request(self, rid, method, path, query=None, body=b"", ctype=None, headers=None):
        if headers is None:
            headers = [["host", "t"]] + ([["content-type", ctype]] if ctype else [])
        self.send(P.REQUEST, rid, {"method": method, "path": path, "query": query,
                                   "headers": headers, "remote_addr": "127.0.0.1",
                                   "remote_port": 1, "http_version": "1.1",
                                   "x_request_id": "r", "forwarded": False,
                                   "context": None}, body)

    def next(self, want=None, timeout=5.0, rid=None):
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.queue):
                if (want is None or f.type == want) and (rid is None or f.request_id == rid):
                    return self.queue.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s frame; got %r" % (want, self.queue))
            if select.select([self.rep_r], [], [], left)[0]:
                chunk = os.read(self.rep_r, 65536)
                if not chunk:
                    raise AssertionError("worker closed its reply pipe")
                self.queue.extend(self.dec.feed(chunk))

    def close(self):
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)
        self.p.stderr.close()
