"""ASGI `websocket` scope through a real worker process (`python -m rustworkers asgi …`
on fds 3/4) driven with the WS_* frames (docs/protocol.md, WebSockets): accept with a
subprotocol and headers, text/binary echo, 1 MiB messages, refusal, denial response,
client close → websocket.disconnect → WS_CLOSE_OUT, app exception → 1011, FLOW.
Fixture: tests/fixtures/python/ws_fixture.py."""

import json
import time
import unittest

from rustworkers import protocol as P
from rustworkers.asgi import build_ws_scope

from .helpers import FIXTURES, Proc

CONFIG = {"protocol": 2, "pool": "ws", "worker_id": 0, "heartbeat_interval": 0.2,
          "timeout": 5.0, "log_level": "info", "kwargs": {}}


def open_meta(path, subprotocols=(), query=None, headers=None):
    return {"method": "GET", "path": path, "query": query,
            "headers": headers or [["host", "example:8080"], ["upgrade", "websocket"]],
            "remote_addr": "127.0.0.1", "remote_port": 4242, "http_version": "1.1",
            "x_request_id": "w", "forwarded": False, "context": None,
            "subprotocols": list(subprotocols)}


class Ws:
    """A worker process with helpers for sockets."""

    def __init__(self, protocol=2, timeout=5.0, **kwargs):
        self.w = Proc("asgi", "ws_fixture:app", [FIXTURES])
        cfg = dict(CONFIG, protocol=protocol, timeout=timeout, kwargs=kwargs)
        self.w.send(P.CONFIG, 0, cfg)
        self.hello = self.w.next(timeout=10)
        assert self.hello.type == P.HELLO, self.hello

    def open(self, sid, path="/ws/echo", subprotocols=()):
        self.w.send(P.WS_OPEN, sid, open_meta(path, subprotocols))

    def accept(self, sid, path="/ws/echo", subprotocols=()):
        self.open(sid, path, subprotocols)
        return self.w.next(P.WS_ACCEPT, rid=sid)

    def say(self, sid, data):
        self.w.send(P.WS_MESSAGE, sid, {"text": isinstance(data, str)},
                    data.encode() if isinstance(data, str) else data)

    def heard(self, sid, timeout=5.0):
        return P.ws_payload(self.w.next(P.WS_MESSAGE_OUT, rid=sid, timeout=timeout))

    def closed(self, sid, timeout=5.0):
        return self.w.next(P.WS_CLOSE_OUT, rid=sid, timeout=timeout).meta

    def events(self, rid=999):
        self.w.request(rid, "GET", "/events")
        return json.loads(self.w.next(P.RESPONSE, rid=rid).body)

    def close(self):
        self.w.close()


class ScopeTest(unittest.TestCase):
    def test_ws_scope(self):
        s = build_ws_scope(open_meta("/mnt/ws/%C3%A9", ["chat", "v2"], "a=1"), "/mnt", {"k": 1})
        self.assertEqual(s["type"], "websocket")
        self.assertNotIn("method", s)
        self.assertEqual(s["asgi"], {"version": "3.0", "spec_version": "2.4"})
        self.assertEqual((s["scheme"], s["path"], s["raw_path"], s["root_path"]),
                         ("ws", "/mnt/ws/é", b"/mnt/ws/%C3%A9", "/mnt"))
        self.assertEqual((s["query_string"], s["subprotocols"]), (b"a=1", ["chat", "v2"]))
        self.assertEqual((s["client"], s["server"]), (["127.0.0.1", 4242], ["example", 8080]))
        self.assertEqual((s["http_version"], s["state"]), ("1.1", {"k": 1}))
        self.assertIn("websocket.http.response", s["extensions"])
        self.assertEqual(build_ws_scope(dict(open_meta("/"), scheme="https"))["scheme"], "wss")


class AsgiWebSocketTest(unittest.TestCase):
    def setUp(self):
        self.ws = Ws()
        self.w = self.ws.w

    def tearDown(self):
        self.ws.close()

    def test_hello_announces_websocket(self):
        self.assertEqual(self.ws.hello.meta, {"pid": self.w.p.pid, "credits": 100,
                                              "websocket": True})

    def test_accept_subprotocol_echo_and_client_close(self):
        acc = self.ws.accept(1, subprotocols=["superchat", "chat"])
        self.assertEqual(acc.meta, {"subprotocol": "chat", "headers": [["x-ws", "1"]]})
        self.ws.say(1, "héllo 👋")
        self.assertEqual(self.ws.heard(1), "héllo 👋")
        self.ws.say(1, bytes(range(256)))
        self.assertEqual(self.ws.heard(1), bytes(range(256)))
        self.ws.say(1, b"")
        self.assertEqual(self.ws.heard(1), b"")
        big = bytes(i % 251 for i in range(1 << 20))
        self.ws.say(1, big)
        self.assertEqual(self.ws.heard(1), big)
        self.ws.say(1, "x" * (1 << 20))
        self.assertEqual(self.ws.heard(1), "x" * (1 << 20))
        # The socket is in hand (holds its credit) while open (older heartbeats queued).
        deadline = time.monotonic() + 3
        while 1 not in self.w.next(P.HEARTBEAT).meta["in_hand"]:
            self.assertLess(time.monotonic(), deadline)
        # Client closes: the app sees websocket.disconnect with the code, and the shim
        # answers WS_CLOSE_OUT to free the credit.
        self.w.send(P.WS_CLOSE, 1, {"code": 1001, "reason": "away"})
        self.assertEqual(self.ws.closed(1), {"code": 1001, "reason": "away"})
        self.assertEqual(self.ws.events()["disconnects"], [["/ws/echo", 1001, "away"]])
        deadline = time.monotonic() + 3
        while 1 in self.w.next(P.HEARTBEAT).meta["in_hand"]:
            self.assertLess(time.monotonic(), deadline)

    def test_no_subprotocol_scope_and_app_close(self):
        self.assertEqual(self.ws.accept(2).meta["subprotocol"], None)
        self.ws.say(2, "scope")
        scope = json.loads(self.ws.heard(2))
        self.assertEqual((scope["type"], scope["path"], scope["scheme"]),
                         ("websocket", "/ws/echo", "ws"))
        self.ws.say(2, "close")
        self.assertEqual(self.ws.closed(2), {"code": 4000, "reason": "bye"})

    def test_refusal_denial_and_errors(self):
        self.ws.open(3, "/ws/refuse")
        self.assertEqual(self.ws.closed(3)["code"], 1008)       # before accept: 403
        self.ws.open(4, "/ws/deny")
        r = self.w.next(P.RESPONSE, rid=4)
        self.assertEqual((r.meta["status"], r.body), (401, b"no entry"))
        self.assertIn(["www-authenticate", "X"], r.meta["headers"])
        self.ws.open(5, "/ws/boom")                           # exception before accept
        self.assertEqual(self.ws.closed(5)["code"], 1011)
        self.ws.open(6, "/ws/bad-subprotocol")                # never a violation
        self.assertEqual(self.ws.closed(6)["code"], 1011)
        self.ws.open(7, "/ws/return")                          # returns without close
        self.w.next(P.WS_ACCEPT, rid=7)
        self.assertEqual(self.ws.heard(7), "bye")
        self.assertEqual(self.ws.closed(7), {"code": 1000, "reason": ""})
        self.ws.accept(8)
        self.ws.say(8, "boom")                                  # exception after accept
        self.assertEqual(self.ws.closed(8), {"code": 1011, "reason": "internal error"})
        log = self.w.next(P.LOG, rid=8)
        self.assertIn("boom in a websocket", log.meta["msg"])
        # The worker lives on.
        self.ws.accept(9)
        self.ws.say(9, "still here")
        self.assertEqual(self.ws.heard(9), "still here")
        for f in self.w.queue:
            self.assertNotIn(f.type, (P.WS_MESSAGE_OUT,), f)

    def test_flow_pauses_one_socket_only(self):
        self.ws.accept(10)
        self.ws.accept(11)
        self.w.send(P.FLOW, 10, {"paused": True})
        self.ws.say(10, "flood 3 1000")
        # Socket 11 is served while 10 is paused.
        self.ws.say(11, "ping")
        self.assertEqual(self.ws.heard(11), "ping")
        hb = self.w.next(P.HEARTBEAT)  # the loop runs; 10 sent nothing meanwhile
        self.assertEqual([f for f in self.w.queue if f.request_id == 10], [], hb)
        self.w.send(P.FLOW, 10, {"paused": False})
        for i in range(3):
            self.assertEqual(self.ws.heard(10), bytes([i]) * 1000)
        self.assertEqual(self.ws.heard(10), "flooded")
        # Paused, then closed by the client: the blocked send() raises ClientDisconnected.
        self.w.send(P.FLOW, 10, {"paused": True})
        self.ws.say(10, "flood 2 10")
        self.w.next(P.HEARTBEAT)
        self.w.send(P.WS_CLOSE, 10, {"code": 1006, "reason": ""})
        self.assertEqual(self.ws.closed(10)["code"], 1006)
        deadline = time.monotonic() + 3
        while self.ws.events(rid=1000 + int((deadline - time.monotonic()) * 100)
                             )["send_errors"] != ["ClientDisconnected"]:
            self.assertLess(time.monotonic(), deadline)
        self.assertEqual([f for f in self.w.queue if f.type == P.WS_MESSAGE_OUT], [])

    def test_disconnect_before_accept_and_stop(self):
        self.ws.accept(20)
        self.ws.accept(21)
        # STOP with sockets open: the worker waits for them (the dispatcher closes them
        # with 1001 at its shutdown_timeout), then exits 0.
        self.w.send(P.STOP)
        self.ws.say(20, "still served while stopping")
        self.assertEqual(self.ws.heard(20), "still served while stopping")
        self.w.send(P.WS_CLOSE, 20, {"code": 1001, "reason": ""})
        self.w.send(P.WS_CLOSE, 21, {"code": 1001, "reason": ""})
        self.assertEqual(self.ws.closed(20)["code"], 1001)
        self.assertEqual(self.ws.closed(21)["code"], 1001)
        self.assertEqual(self.w.p.wait(5), 0)


class StopTest(unittest.TestCase):
    def test_open_sockets_outlive_the_stop_grace(self):
        ws = Ws(timeout=0.3)
        try:
            ws.accept(1)
            ws.w.send(P.STOP)
            deadline = time.monotonic() + 0.6   # twice the grace: still serving
            while time.monotonic() < deadline:
                ws.say(1, "x")
                self.assertEqual(ws.heard(1), "x")
            self.assertIsNone(ws.w.p.poll())
            ws.w.send(P.WS_CLOSE, 1, {"code": 1001, "reason": ""})
            self.assertEqual(ws.closed(1)["code"], 1001)
            self.assertEqual(ws.w.p.wait(5), 0)
        finally:
            ws.close()


class StarletteWebSocketTest(unittest.TestCase):
    """Starlette's WebSocket class over the shim: echo, broadcast, disconnect codes."""

    def test_echo_and_broadcast(self):
        ws = Ws.__new__(Ws)
        ws.w = w = Proc("asgi", "starlette_ws:app", [FIXTURES])
        try:
            w.send(P.CONFIG, 0, dict(CONFIG, kwargs={"lifespan": "off"}))
            self.assertTrue(w.next(timeout=10).meta["websocket"])
            self.assertEqual(ws.accept(1, "/ws/echo", ["chat"]).meta["subprotocol"], "chat")
            ws.say(1, "hi")
            self.assertEqual(ws.heard(1), "hi")
            ws.say(1, b"\x00\xff")
            self.assertEqual(ws.heard(1), b"\x00\xff")
            ws.say(1, "close")
            self.assertEqual(ws.closed(1), {"code": 4000, "reason": "bye"})
            ws.accept(2, "/ws/room")
            self.assertEqual(ws.heard(2), "joined 1")
            ws.accept(3, "/ws/room")
            self.assertEqual(ws.heard(3), "joined 2")
            ws.say(3, "hello all")
            self.assertEqual(ws.heard(2), "2: hello all")
            self.assertEqual(ws.heard(3), "2: hello all")
            w.send(P.WS_CLOSE, 2, {"code": 1000, "reason": ""})
            self.assertEqual(ws.closed(2)["code"], 1000)
            ws.say(3, "alone")
            self.assertEqual(ws.heard(3), "2: alone")
            w.request(9, "GET", "/api/ws-events")
            ev = json.loads(w.next(P.RESPONSE, rid=9).body)
            self.assertEqual(ev, {"disconnects": [["/ws/room", 1000]], "members": 1})
        finally:
            w.close()


class WebSocketOptInTest(unittest.TestCase):
    def test_protocol_1_or_turned_off_does_not_announce(self):
        for proto, kwargs in ((1, {}), (2, {"websocket": False})):
            ws = Ws(protocol=proto, **kwargs)
            try:
                self.assertNotIn("websocket", ws.hello.meta)
            finally:
                ws.close()


if __name__ == "__main__":
    unittest.main()
