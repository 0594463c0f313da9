"""The ASGI adapter as a real process (`python -m rustworkers asgi …` on fds 3/4), driven
with protocol frames: scope, bodies, streams, errors, concurrency, DISCONNECT, FLOW,
heartbeats from the loop, lifespan, STOP. Fixture apps: tests/fixtures/python/."""

import json
import os
import signal
import tempfile
import time
import unittest

from rustworkers import protocol as P
from rustworkers.asgi import build_scope

from .helpers import FIXTURES, Proc

CONFIG = {"protocol": 1, "pool": "asgi", "worker_id": 0, "heartbeat_interval": 0.2,
          "timeout": 5.0, "log_level": "info", "kwargs": {}}


def config(**kwargs):
    cfg = dict(CONFIG)
    cfg["kwargs"] = kwargs
    return cfg


def start(target="asgi_fixture:app", args=(), env=None, **kwargs):
    w = Proc("asgi", target, [FIXTURES], args=args, env=env)
    w.send(P.CONFIG, 0, config(**kwargs))
    return w


def hello(w):
    f = w.next(timeout=10)
    assert f.type == P.HELLO, f
    return f


class ScopeTest(unittest.TestCase):
    def test_scope_fields(self):
        meta = {"method": "get", "path": "/mnt/a%20b/%C3%A9", "query": "x=1&y=%20",
                "headers": [["host", "example.org:8080"], ["x-tag", "v\xe9"]],
                "remote_addr": "10.0.0.1", "remote_port": 5555, "http_version": "1.0",
                "scheme": "https"}
        s = build_scope(meta, "/mnt/", {"k": 1})
        self.assertEqual(s["type"], "http")
        self.assertEqual(s["asgi"], {"version": "3.0", "spec_version": "2.4"})
        self.assertEqual((s["method"], s["http_version"], s["scheme"]), ("GET", "1.0", "https"))
        self.assertEqual(s["path"], "/mnt/a b/é")
        self.assertEqual(s["raw_path"], b"/mnt/a%20b/%C3%A9")
        self.assertEqual(s["root_path"], "/mnt")
        self.assertEqual(s["query_string"], b"x=1&y=%20")
        self.assertEqual(s["headers"], [(b"host", b"example.org:8080"), (b"x-tag", b"v\xe9")])
        self.assertEqual(s["client"], ["10.0.0.1", 5555])
        self.assertEqual(s["server"], ["example.org", 8080])
        self.assertEqual(s["state"], {"k": 1})
        # Outside the mount point: no root_path; no query: b""; no Host: server None.
        s = build_scope({"path": "/other", "query": None, "headers": []}, "/mnt")
        self.assertEqual((s["root_path"], s["query_string"], s["server"], s["client"]),
                         ("", b"", None, None))


class AsgiWorkerTest(unittest.TestCase):
    def test_requests_streams_errors_and_stop(self):
        with tempfile.TemporaryDirectory() as tmp:
            mark = os.path.join(tmp, "shutdown")
            w = start(env={"LIFESPAN_MARK": mark}, concurrency=7, loop="asyncio")
            try:
                self.assertEqual(hello(w).meta, {"pid": w.p.pid, "credits": 7})

                w.request(1, "GET", "/scope", query="a=1",
                          headers=[["host", "h:81"], ["x-one", "1"], ["x-one", "2"]])
                r = w.next(P.RESPONSE, rid=1)
                self.assertEqual(r.meta["status"], 200)
                self.assertIn(["x-ok", "yes"], r.meta["headers"])
                self.assertNotIn("x-bad", [k for k, _ in r.meta["headers"]])  # CR/LF dropped
                scope = json.loads(r.body)["scope"]
                self.assertEqual(scope["path"], "/scope")
                self.assertEqual(scope["query_string"], "a=1")
                self.assertEqual(scope["headers"], [["host", "h:81"], ["x-one", "1"],
                                                    ["x-one", "2"]])
                self.assertEqual(scope["server"], ["h", 81])
                self.assertEqual(scope["client"], ["127.0.0.1", 1])
                self.assertEqual(scope["state"], {"started": w.p.pid})  # from lifespan

                body = bytes(range(256)) * 64
                w.request(2, "POST", "/echo", body=body)
                r = w.next(P.RESPONSE, rid=2)
                self.assertEqual((r.meta["status"], r.body), (200, body))

                w.request(3, "GET", "/stream", query="n=3")
                self.assertEqual(w.next(P.STREAM_START, rid=3).meta["status"], 200)
                chunks = [w.next(P.STREAM_CHUNK, rid=3).body for _ in range(3)]
                self.assertEqual(chunks, [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"])
                self.assertEqual(w.next(P.STREAM_END, rid=3).meta, {})

                # Errors before the response starts: a clean 500; the worker lives on.
                for rid, path in ((4, "/boom"), (5, "/nostart"), (6, "/bad-status")):
                    w.request(rid, "GET", path)
                    r = w.next(P.RESPONSE, rid=rid)
                    self.assertEqual(r.meta["status"], 500, path)
                log = w.next(P.LOG, rid=4)
                self.assertIn("asgi fixture boom marker", log.meta["msg"])
                self.assertIn("Traceback", log.meta["msg"])
                self.assertEqual(log.meta["level"], 40)

                # After the stream started: the stream ends marked aborted.
                w.request(7, "GET", "/boom-mid")
                w.next(P.STREAM_START, rid=7)
                self.assertEqual(w.next(P.STREAM_CHUNK, rid=7).body, b"part")
                self.assertEqual(w.next(P.STREAM_END, rid=7).meta, {"abort": True})

                hb = w.next(P.HEARTBEAT)
                self.assertEqual(hb.meta, {"in_hand": [], "extend": []})

                # STOP: the request in hand is finished, lifespan shutdown runs, exit 0.
                w.request(8, "GET", "/sleep", query="s=0.3")
                w.send(P.STOP)
                self.assertEqual(json.loads(w.next(P.RESPONSE, rid=8).body), {"slept": 0.3})
                self.assertEqual(w.p.wait(5), 0)
                with open(mark) as f:
                    self.assertEqual(f.read(), "shutdown %d" % w.p.pid)
            finally:
                w.close()

    def test_concurrent_requests_on_one_loop(self):
        w = start()
        try:
            self.assertEqual(hello(w).meta["credits"], 100)  # the default
            t0 = time.monotonic()
            for rid in range(1, 21):
                w.request(rid, "GET", "/sleep", query="s=0.5")
            got = {w.next(P.RESPONSE, timeout=10).request_id for _ in range(20)}
            elapsed = time.monotonic() - t0
            self.assertEqual(got, set(range(1, 21)))
            # Serially this is 10 s; concurrently about 0.5 s.
            self.assertLess(elapsed, 3.0)
        finally:
            w.close()

    def test_disconnect_cancels_only_that_request(self):
        w = start()
        try:
            hello(w)
            w.request(1, "GET", "/hang")
            w.request(2, "GET", "/sleep", query="s=0.4")
            deadline = time.monotonic() + 5
            while 1 not in w.next(P.HEARTBEAT).meta["in_hand"]:
                self.assertLess(time.monotonic(), deadline)
            w.send(P.DISCONNECT, 1)
            # The credit is given back at once: a heartbeat without id 1.
            while 1 in w.next(P.HEARTBEAT).meta["in_hand"]:
                self.assertLess(time.monotonic(), deadline)
            self.assertEqual(w.next(P.RESPONSE, rid=2).meta["status"], 200)
            w.request(3, "GET", "/cancelled")
            self.assertEqual(json.loads(w.next(P.RESPONSE, rid=3).body)["cancelled"], 1)
            self.assertFalse([f for f in w.queue if f.request_id == 1
                              and f.type in (P.RESPONSE, P.STREAM_START)])
        finally:
            w.close()

    def test_flow_pause_holds_the_stream(self):
        w = start()
        try:
            hello(w)
            w.request(1, "GET", "/stream", query="n=6&gap=0.05")
            w.next(P.STREAM_START, rid=1)
            w.next(P.STREAM_CHUNK, rid=1)
            w.send(P.FLOW, 1, {"paused": True})
            # Heartbeats are the clock: over three intervals (0.6 s, twelve gaps of the
            # stream), at most one chunk already on its way may arrive.
            for _ in range(3):
                w.next(P.HEARTBEAT)
            held = [f for f in w.queue if f.request_id == 1]
            self.assertLessEqual(len(held), 1, held)
            w.send(P.FLOW, 1, {"paused": False})
            w.next(P.STREAM_END, rid=1, timeout=5)
            chunks = [f for f in held + w.queue if f.type == P.STREAM_CHUNK]
            self.assertEqual(len(chunks), 5)
        finally:
            w.close()

    def test_blocked_loop_stops_heartbeats_and_usr2_dumps_stacks(self):
        w = start()
        try:
            hello(w)
            w.next(P.HEARTBEAT)
            w.request(1, "GET", "/block", query="s=1.2")
            # Wait for the loop to stop beating, then dump its stack.
            last = time.monotonic()
            w.next(P.HEARTBEAT)
            gap = 0.0
            while gap < 0.6:
                w.next(P.HEARTBEAT, timeout=5)
                now = time.monotonic()
                gap, last = now - last, now
                if w.queue and any(f.request_id == 1 for f in w.queue):
                    break
            self.assertGreaterEqual(gap, 0.6, "heartbeats went on while the loop was blocked")
            w.next(P.RESPONSE, rid=1)
            w.request(2, "GET", "/block", query="s=1.0")
            time.sleep(0.3)  # inside the 1 s block
            os.kill(w.p.pid, signal.SIGUSR2)
            w.next(P.RESPONSE, rid=2)
            w.send(P.STOP)
            self.assertEqual(w.p.wait(5), 0)
            err = w.p.stderr.read().decode()
            self.assertIn("asgi_fixture.py", err)
        finally:
            w.close()

    def test_background_work_after_response_finishes_before_stop_exits(self):
        w = start()
        try:
            hello(w)
            w.request(1, "GET", "/bg", query="s=0.3")
            self.assertEqual(w.next(P.RESPONSE, rid=1).meta["status"], 200)
            self.assertEqual(w.next(P.HEARTBEAT).meta["in_hand"], [])
            w.send(P.STOP)
            self.assertEqual(w.p.wait(5), 0)
        finally:
            w.close()

    def test_factory_root_path_and_uvloop(self):
        w = start("asgi_fixture:make_app", args=("--factory",), env={"SCRIPT_NAME": "/mnt"},
                  loop="uvloop")
        try:
            hello(w)
            w.request(1, "GET", "/mnt/scope")
            scope = json.loads(w.next(P.RESPONSE, rid=1).body)["scope"]
            self.assertEqual((scope["root_path"], scope["path"]), ("/mnt", "/mnt/scope"))
            w.request(2, "GET", "/mnt/loop")
            self.assertEqual(json.loads(w.next(P.RESPONSE, rid=2).body)["loop"], "uvloop")
        finally:
            w.close()

    def test_malformed_request_meta_fails_that_request_only(self):
        w = start()
        try:
            hello(w)
            w.send(P.REQUEST, 1, {"method": "GET", "path": "/scope", "headers": [["lonely"]]})
            self.assertEqual(w.next(P.RESPONSE, rid=1).meta["status"], 500)
            w.request(2, "GET", "/scope")
            self.assertEqual(w.next(P.RESPONSE, rid=2).meta["status"], 200)
        finally:
            w.close()

    def test_eof_exits_zero(self):
        w = start()
        try:
            hello(w)
            os.close(w.req_w)
            self.assertEqual(w.p.wait(5), 0)
        finally:
            w.close()


class AsgiStartupTest(unittest.TestCase):
    def assert_failed_start(self, w, text):
        try:
            self.assertEqual(w.p.wait(10), 3)
            self.assertEqual(os.read(w.rep_r, 100), b"")  # no frame at all, no HELLO
            self.assertIn(text, w.p.stderr.read())
        finally:
            w.close()

    def test_lifespan_startup_failed(self):
        self.assert_failed_start(start("asgi_fixture:failing_app"),
                                 b"asgi fixture startup marker")

    def test_lifespan_on_with_an_app_without_lifespan(self):
        self.assert_failed_start(start("asgi_fixture:no_lifespan_app", lifespan="on"),
                                 b"only http here")

    def test_import_error_and_bad_options(self):
        self.assert_failed_start(start("no_such_module:app"), b"No module named")
        self.assert_failed_start(start(concurrency=0), b"concurrency")
        self.assert_failed_start(start(loop="trio"), b"loop")

    def test_lifespan_auto_and_off(self):
        for mode in ("auto", "off"):
            with self.subTest(mode):
                w = start("asgi_fixture:no_lifespan_app", lifespan=mode)
                try:
                    hello(w)
                    w.request(1, "GET", "/")
                    self.assertEqual(json.loads(w.next(P.RESPONSE, rid=1).body), {"state": {}})
                finally:
                    w.close()


class FastApiTest(unittest.TestCase):
    """FastAPI/Starlette (test dependencies) through the adapter."""

    def test_fastapi_sse_event_by_event_and_lifespan_state(self):
        w = start("fastapi_fixture:app")
        try:
            hello(w)
            w.request(1, "GET", "/api/state")
            state = json.loads(w.next(P.RESPONSE, rid=1).body)
            self.assertEqual(state["startup_pid"], w.p.pid)
            w.request(2, "GET", "/api/sse", query="count=3&gap=0.25")
            w.next(P.STREAM_START, rid=2)
            times, events = [], []
            for _ in range(3):
                events.append(w.next(P.STREAM_CHUNK, rid=2).body)
                times.append(time.monotonic())
            w.next(P.STREAM_END, rid=2)
            self.assertEqual(events, [b"event: tick\ndata: %d\n\n" % i for i in range(3)])
            self.assertGreater(times[2] - times[0], 0.4)  # one frame per event, as produced
            w.request(3, "PUT", "/api/items/5", body=b'{"name": 1}',
                      headers=[["content-type", "application/json"]])
            self.assertEqual(w.next(P.RESPONSE, rid=3).meta["status"], 422)
        finally:
            w.close()


if __name__ == "__main__":
    unittest.main()
