"""WSGI streaming through a real worker process (`python -m rustworkers wsgi …` on fds
3/4) with a Flask app (tests/fixtures/python/wsgi_stream.py): a generator's chunks go out
as STREAM_CHUNK frames as they are produced, a plain body is one RESPONSE, close() is
always called (end, DISCONNECT, error), FLOW pauses the producer, heartbeats go on."""

import json
import time
import unittest

from rustworkers import protocol as P

from .helpers import FIXTURES, Proc

CONFIG = {"protocol": 2, "pool": "flask", "worker_id": 0, "heartbeat_interval": 0.1,
          "timeout": 5.0, "log_level": "info", "kwargs": {}}


class WsgiStreamTest(unittest.TestCase):
    def setUp(self):
        self.w = Proc("wsgi", "wsgi_stream:app", [FIXTURES])
        self.w.send(P.CONFIG, 0, CONFIG)
        self.assertEqual(self.w.next(timeout=10).type, P.HELLO)

    def tearDown(self):
        self.w.close()

    def closed_count(self, rid):
        self.w.request(rid, "GET", "/closed")
        return json.loads(self.w.next(P.RESPONSE, rid=rid).body)["closed"]

    def test_plain_body_is_one_response(self):
        self.w.request(1, "GET", "/plain")
        r = self.w.next(P.RESPONSE, rid=1)
        self.assertEqual((r.meta["status"], r.body), (200, b"plain body"))
        self.assertEqual(self.closed_count(2), 1)

    def test_generator_chunks_arrive_as_produced(self):
        self.w.request(1, "GET", "/stream", query="n=3&gap=0.4&name=x")
        start = self.w.next(P.STREAM_START, rid=1)
        self.assertEqual(start.meta["status"], 200)
        self.assertIn(["Content-Type", "text/plain; charset=utf-8"], start.meta["headers"])
        times, chunks = [], []
        for _ in range(3):
            chunks.append(self.w.next(P.STREAM_CHUNK, rid=1).body)
            times.append(time.monotonic())
        self.w.next(P.STREAM_END, rid=1)
        self.assertEqual(chunks, [b"chunk %d of x\n" % i for i in range(3)])
        # Each chunk came when produced, not all at the end.
        self.assertGreater(times[1] - times[0], 0.25)
        self.assertGreater(times[2] - times[1], 0.25)
        # Heartbeats went on between chunks (the loop drives the stream; a generator
        # blocking in next() holds the loop, as any slow sync handler does).
        hbs = [f for f in self.w.queue if f.type == P.HEARTBEAT]
        self.assertGreaterEqual(len(hbs), 2)
        self.assertTrue(any(1 in f.meta["in_hand"] for f in hbs), hbs)
        self.assertEqual(self.closed_count(2), 1)

    def test_flow_pauses_the_producer(self):
        self.w.request(1, "GET", "/stream", query="n=6&gap=0.05")
        self.w.next(P.STREAM_START, rid=1)
        got = [self.w.next(P.STREAM_CHUNK, rid=1).body]
        self.w.send(P.FLOW, 1, {"paused": True})
        # At most the chunk in production when FLOW came goes out; then none, while
        # heartbeats go on.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            self.w.next(P.HEARTBEAT)
        got += [f.body for f in self.w.queue if f.type == P.STREAM_CHUNK]
        self.w.queue = [f for f in self.w.queue if f.type != P.STREAM_CHUNK]
        self.assertLessEqual(len(got), 2)
        self.assertNotIn(P.STREAM_END, [f.type for f in self.w.queue])
        self.w.send(P.FLOW, 1, {"paused": False})
        while len(got) < 6:
            got.append(self.w.next(P.STREAM_CHUNK, rid=1).body)
        self.w.next(P.STREAM_END, rid=1)
        self.assertEqual(got, [b"chunk %d of stream\n" % i for i in range(6)])

    def test_disconnect_closes_the_iterable(self):
        self.w.request(1, "GET", "/stream", query="n=100&gap=0.05")
        self.w.next(P.STREAM_CHUNK, rid=1)
        self.w.send(P.DISCONNECT, 1)
        self.assertEqual(self.closed_count(2), 1)
        time.sleep(0.2)  # nothing more for the dropped stream
        self.w.queue = [f for f in self.w.queue if f.type != P.STREAM_CHUNK or f.request_id != 1]
        hb = self.w.next(P.HEARTBEAT)
        self.assertNotIn(1, hb.meta["in_hand"])
        self.assertNotIn(P.STREAM_END, [f.type for f in self.w.queue if f.request_id == 1])

    def test_error_mid_stream_aborts(self):
        self.w.request(1, "GET", "/boom-mid")
        self.w.next(P.STREAM_START, rid=1)
        self.assertEqual(self.w.next(P.STREAM_CHUNK, rid=1).body, b"first\n")
        self.assertEqual(self.w.next(P.STREAM_END, rid=1).meta, {"abort": True})
        self.assertIn("boom mid-stream", self.w.next(P.LOG).meta["msg"])
        self.assertEqual(self.closed_count(2), 1)

    def test_stop_finishes_the_stream(self):
        self.w.request(1, "GET", "/stream", query="n=3&gap=0.2")
        self.w.next(P.STREAM_START, rid=1)
        self.w.send(P.STOP)
        for _ in range(3):
            self.w.next(P.STREAM_CHUNK, rid=1)
        self.w.next(P.STREAM_END, rid=1)
        self.assertEqual(self.w.p.wait(5), 0)


if __name__ == "__main__":
    unittest.main()
