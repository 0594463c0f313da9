"""Test helpers: a worker attached to a real os.pipe() transport, frames read back."""

import fcntl
import json
import os

from rustworkers import protocol as P
from rustworkers.transport import Transport

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
