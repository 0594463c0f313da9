"""End to end: `python -m rustworkers worker examples.items_worker:ItemsWorker` on real
pipes at fds 3/4, driven through CONFIG/HELLO/REQUEST/RESPONSE/HEARTBEAT/STREAM/STOP."""

import json
import os
import tempfile
import unittest

from rustworkers import protocol as P

from .helpers import Proc

CONFIG = {"protocol": 1, "pool": "items", "worker_id": 0, "heartbeat_interval": 0.2,
          "timeout": 5.0, "log_level": "info", "kwargs": {"greeting": "hi"}}


class EndToEndTest(unittest.TestCase):
    def test_items_worker(self):
        w = Proc("worker", "examples.items_worker:ItemsWorker")
        try:
            w.send(P.CONFIG, 0, CONFIG)
            hello = w.next()
            self.assertEqual(hello.type, P.HELLO)
            self.assertEqual(hello.meta, {"pid": w.p.pid, "credits": 1, "prefetch": 16})

            w.request(1, "GET", "/api/hello")
            r = w.next(P.RESPONSE)
            self.assertEqual((r.request_id, r.meta["status"], json.loads(r.body)),
                             (1, 200, {"hello": "world"}))
            self.assertIn(["content-type", "application/json"], r.meta["headers"])

            w.request(2, "POST", "/api/items", body=b'{"name": "x"}', ctype="application/json")
            r = w.next(P.RESPONSE)
            self.assertEqual((r.meta["status"], json.loads(r.body)), (201, {"name": "x", "id": 1}))
            w.request(3, "GET", "/api/items/1")
            self.assertEqual(json.loads(w.next(P.RESPONSE).body)["name"], "x")
            w.request(4, "PUT", "/api/items")
            r = w.next(P.RESPONSE)
            self.assertEqual(r.meta["status"], 405)
            self.assertIn(["Allow", "GET, POST"], r.meta["headers"])

            hb = w.next(P.HEARTBEAT)
            self.assertEqual(hb.meta["in_hand"], [])

            w.request(5, "GET", "/api/items/events", query="count=2")
            start = w.next(P.STREAM_START)
            self.assertEqual(start.request_id, 5)
            self.assertIn(b"event: tick", w.next(P.STREAM_CHUNK).body)
            w.next(P.STREAM_CHUNK)
            self.assertEqual(w.next(P.STREAM_END).request_id, 5)

            w.request(6, "GET", "/api/items/next")
            self.assertEqual(w.next(P.CREDIT).meta, {"credits": 2})
            w.request(7, "POST", "/api/items", body=b'{"name": "y"}', ctype="application/json")
            got = {w.next(P.RESPONSE).request_id for _ in range(2)}
            self.assertEqual(got, {6, 7})

            w.send(P.STOP)
            self.assertEqual(w.p.wait(5), 0)
        finally:
            w.close()

    def test_eof_exits_zero(self):
        w = Proc("worker", "examples.items_worker:ItemsWorker")
        try:
            w.send(P.CONFIG, 0, CONFIG)
            self.assertEqual(w.next().type, P.HELLO)
            os.close(w.req_w)
            self.assertEqual(w.p.wait(5), 0)
        finally:
            w.close()

    def test_setup_failures_and_exit_codes(self):
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "bad_workers.py"), "w") as f:
                f.write("import sys\nfrom rustworkers import Worker\n"
                        "class Raises(Worker):\n    def setup(self):\n        raise RuntimeError('nope')\n"
                        "class Exits(Worker):\n    def setup(self):\n        sys.exit(42)\n")
            for target, code, text in (("bad_workers:Raises", 3, b"setup() failed"),
                                       ("bad_workers:Exits", 42, b""),
                                       ("no_such_module:X", 3, b"loading no_such_module:X")):
                with self.subTest(target):
                    w = Proc("worker", target, [tmp])
                    try:
                        w.send(P.CONFIG, 0, CONFIG)
                        self.assertEqual(w.p.wait(5), code)
                        err = w.p.stderr.read()
                        self.assertIn(text, err)
                        if code == 3:  # a failed start keeps its traceback on stderr
                            self.assertIn(b"Traceback", err)
                    finally:
                        w.close()



SIZE_APP = ("def app(environ, start_response):\n"
            "    body = environ['wsgi.input'].read()\n"
            "    start_response('200 OK', [('content-type', 'text/plain')])\n"
            "    return [b'%d %d' % (len(body), body.count(b'x'))]\n")


class FrameLimitTest(unittest.TestCase):
    """CONFIG `max_frame_bytes` sets the worker's limit for incoming frames (issue 7 #5)."""

    def _start(self, tmp, limit):
        with open(os.path.join(tmp, "size_app.py"), "w") as f:
            f.write(SIZE_APP)
        w = Proc("wsgi", "size_app:app", [tmp])
        cfg = dict(CONFIG)
        if limit is not None:
            cfg["max_frame_bytes"] = limit
        return w, cfg

    def test_body_over_64_mib_delivered_when_config_allows(self):
        size = (64 << 20) + 4096
        with tempfile.TemporaryDirectory() as tmp:
            w, cfg = self._start(tmp, 80 << 20)
            try:
                # CONFIG and the big REQUEST in one write: the limit must already apply to
                # the frame read together with CONFIG.
                meta = {"method": "POST", "path": "/", "query": None,
                        "headers": [["content-length", str(size)]], "remote_addr": "127.0.0.1",
                        "remote_port": 1, "http_version": "1.1", "x_request_id": "r",
                        "forwarded": False, "context": None}
                data = (P.encode_frame(P.CONFIG, 0, cfg)
                        + P.encode_frame(P.REQUEST, 1, meta, b"x" * size))
                os.write(w.req_w, data)
                del data
                self.assertEqual(w.next(P.HELLO).type, P.HELLO)
                r = w.next(P.RESPONSE, timeout=30)
                self.assertEqual((r.request_id, r.meta["status"], r.body),
                                 (1, 200, b"%d %d" % (size, size)))
                w.send(P.STOP)
                self.assertEqual(w.p.wait(10), 0)
            finally:
                w.close()

    def test_default_limit_is_64_mib(self):
        with tempfile.TemporaryDirectory() as tmp:
            w, cfg = self._start(tmp, None)
            try:
                w.send(P.CONFIG, 0, cfg)
                self.assertEqual(w.next(P.HELLO).type, P.HELLO)
                # Only the header is needed: a body_len over the limit is fatal at once.
                os.write(w.req_w, P.HEADER.pack(P.MAGIC, P.VERSION, P.REQUEST, 1, 0,
                                                (64 << 20) + 1))
                self.assertNotEqual(w.p.wait(10), 0)
                self.assertIn(b"over limit", w.p.stderr.read())
            finally:
                w.close()


if __name__ == "__main__":
    unittest.main()
