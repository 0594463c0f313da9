"""The sync Worker API's @websocket routes through a real worker process
(`python -m rustworkers worker ws_worker:ChatWorker` on fds 3/4), driven with WS_* frames:
accept with subprotocol and headers, echo, 1 MiB, rooms, refusals (RejectRequest → HTTP
answer, exception → refused), DEFERRED accept from an HTTP request, credits while
sockets are open, FLOW, client close → on_close + WS_CLOSE_OUT, STOP with sockets open.
Fixture: tests/fixtures/python/ws_worker.py."""

import json
import time
import unittest

from rustworkers import protocol as P

from .helpers import FIXTURES, Proc
from .test_asgi_ws import Ws, open_meta

CONFIG = {"protocol": 2, "pool": "chat", "worker_id": 0, "heartbeat_interval": 0.2,
          "timeout": 5.0, "log_level": "info", "kwargs": {}}


def start(target="ws_worker:ChatWorker", protocol=2):
    ws = Ws.__new__(Ws)
    ws.w = Proc("worker", target, [FIXTURES])
    ws.w.send(P.CONFIG, 0, dict(CONFIG, protocol=protocol))
    ws.hello = ws.w.next(timeout=10)
    assert ws.hello.type == P.HELLO, ws.hello
    return ws


class WorkerWebSocketTest(unittest.TestCase):
    def setUp(self):
        self.ws = start()
        self.w = self.ws.w

    def tearDown(self):
        self.ws.close()

    def http(self, rid, method, path):
        self.w.request(rid, method, path)
        r = self.w.next(P.RESPONSE, rid=rid)
        return r.meta["status"], json.loads(r.body)

    def credits(self, want, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            f = self.w.next(P.CREDIT, timeout=max(0.01, deadline - time.monotonic()))
            if f.meta["credits"] == want:
                return

    def test_hello_echo_credits_and_close(self):
        self.assertEqual(self.ws.hello.meta, {"pid": self.w.p.pid, "credits": 1,
                                              "prefetch": 16, "websocket": True})
        acc = self.ws.accept(1, subprotocols=["chat"])
        self.assertEqual(acc.meta, {"subprotocol": "chat", "headers": [["x-ws", "1"]]})
        self.credits(2)  # the socket holds one credit, requests keep one
        self.assertEqual(self.http(2, "GET", "/hello"), (200, {"hello": "world"}))
        self.ws.say(1, "héllo")
        self.assertEqual(self.ws.heard(1), "héllo")
        big = bytes(i % 253 for i in range(1 << 20))
        self.ws.say(1, big)
        self.assertEqual(self.ws.heard(1), big)
        self.w.send(P.WS_CLOSE, 1, {"code": 1005, "reason": ""})
        self.assertEqual(self.ws.closed(1), {"code": 1005, "reason": ""})
        self.credits(1)
        self.assertEqual(self.http(3, "GET", "/events")[1],
                         {"events": [["/ws/echo", 1005, ""]], "open": []})

    def test_app_close_error_and_refusals(self):
        self.ws.accept(1)
        self.ws.say(1, "close")
        self.assertEqual(self.ws.closed(1), {"code": 4000, "reason": "bye"})
        self.ws.accept(2)
        self.ws.say(2, "boom")
        self.assertEqual(self.ws.closed(2), {"code": 1011, "reason": "internal error"})
        self.assertIn("boom in on_message", self.w.next(P.LOG, rid=2).meta["msg"])
        self.ws.open(3, "/ws/private")
        r = self.w.next(P.RESPONSE, rid=3)
        self.assertEqual((r.meta["status"], json.loads(r.body)), (401, {"error": "token required"}))
        self.ws.open(4, "/ws/boom")
        self.assertEqual(self.ws.closed(4)["code"], 1011)   # before accept: refused (403)
        self.ws.open(5, "/ws/nowhere")
        self.assertEqual(self.w.next(P.RESPONSE, rid=5).meta["status"], 404)
        self.w.send(P.WS_OPEN, 6, dict(open_meta("/ws/private"), query="token=ok"))
        self.w.next(P.WS_ACCEPT, rid=6)
        self.ws.say(6, "x")
        self.assertEqual(json.loads(self.ws.heard(6)), {"private": "x"})
        self.assertEqual(self.http(7, "GET", "/events")[1],
                         {"events": [["/ws/echo", 4000, "bye"], ["/ws/echo", 1011,
                                                                  "internal error"]],
                          "open": [6]})

    def test_room_broadcast_and_deferred_accept(self):
        for sid in (1, 2):
            self.ws.open(sid, "/ws/room/a")
            self.w.next(P.WS_ACCEPT, rid=sid)   # accepted when the handler returned
        self.ws.say(1, "hi")
        self.assertEqual(self.ws.heard(1), "1: hi")
        self.assertEqual(self.ws.heard(2), "1: hi")
        self.w.send(P.WS_CLOSE, 1, {"code": 1006, "reason": ""})
        self.ws.closed(1)
        self.ws.say(2, "alone")
        self.assertEqual(self.ws.heard(2), "2: alone")
        self.ws.open(3, "/ws/later")
        self.w.next(P.HEARTBEAT)
        self.assertNotIn(P.WS_ACCEPT, [f.type for f in self.w.queue if f.request_id == 3])
        self.assertEqual(self.http(4, "POST", "/accept-later"), (200, {"accepted": 3}))
        self.w.next(P.WS_ACCEPT, rid=3)
        self.assertEqual(self.ws.heard(3), "accepted late")

    def test_flow_queues_in_order_then_close(self):
        self.ws.accept(1)
        self.w.send(P.FLOW, 1, {"paused": True})
        self.ws.say(1, "flood 3 100")
        self.ws.say(1, "close")
        self.assertEqual(self.http(2, "GET", "/hello")[0], 200)   # the loop is not held
        self.assertEqual([f for f in self.w.queue if f.request_id == 1], [])
        self.w.send(P.FLOW, 1, {"paused": False})
        for i in range(3):
            self.assertEqual(self.ws.heard(1), bytes([i]) * 100)
        self.assertEqual(self.ws.heard(1), "flooded")
        self.assertEqual(self.ws.closed(1)["code"], 4000)

    def test_stop_waits_for_open_sockets(self):
        self.ws.accept(1)
        self.w.send(P.STOP)
        self.ws.say(1, "still")
        self.assertEqual(self.ws.heard(1), "still")
        self.assertIsNone(self.w.p.poll())
        self.w.send(P.WS_CLOSE, 1, {"code": 1001, "reason": ""})
        self.assertEqual(self.ws.closed(1)["code"], 1001)
        self.assertEqual(self.w.p.wait(5), 0)

    def test_closed_before_served(self):
        # WS_OPEN and WS_CLOSE in one write: the open is dropped, the credit freed.
        self.ws.open(1, "/ws/echo")
        self.w.send(P.WS_CLOSE, 1, {"code": 1006, "reason": ""})
        f = self.w.next(rid=1)
        self.assertIn(f.type, (P.WS_CLOSE_OUT, P.WS_ACCEPT))
        if f.type == P.WS_ACCEPT:  # served before the close was read
            self.ws.closed(1)


class OptInTest(unittest.TestCase):
    def test_no_websocket_routes_or_protocol_1(self):
        for target, proto in (("examples.items_worker:ItemsWorker", 2),
                              ("ws_worker:ChatWorker", 1)):
            ws = start(target, proto)
            try:
                self.assertNotIn("websocket", ws.hello.meta)
            finally:
                ws.close()


if __name__ == "__main__":
    unittest.main()
