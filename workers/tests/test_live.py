"""The worker attached to a real pipe: frames it produces for each API call."""

import json
import unittest

from rustworkers import DEFERRED, Worker, api
from rustworkers import protocol as P

from .helpers import Harness, json_of, response_of


class Live(Worker):
    def setup(self):
        self.held = []
        self.disconnected = []

    @api("/echo", "GET", "POST")
    def echo(self, r):
        return {"path": r.path, "query": r.query, "data": r.data if not isinstance(r.data, bytes)
                else r.data.decode(), "headers": r.headers, "ct": r.content_type,
                "remote": r.remote_address, "id": r.request_id, "cookies": r.cookies}

    @api("/hold")
    def hold(self, r):
        self.held.append(r)
        return DEFERRED

    @api("/now-and-later")
    def now_and_later(self, r):
        r.respond("first")
        return "second"

    @api("/sse")
    def sse(self, r):
        r.send_chunk("before start is ignored")
        r.response_stream(headers={"X-S": "1"})
        r.send_event({"a": 1})
        r.send_event("l1\nl2", event="e", event_id=3, retry=10)
        r.send_chunk("raw")
        r.response_stream_end()
        r.send_chunk("after end is ignored")
        return DEFERRED

    @api("/ndjson")
    def ndjson(self, r):
        r.response_ndjson()
        r.send_ndjson({})
        self.held.append(r)
        return DEFERRED

    @api("/log")
    def log_it(self, r):
        self.log.warning("hello %s", "there")
        self.keep_alive()
        return None

    @api("/set")
    def bad_body(self, r):
        return {1, 2}

    @api("/cookie")
    def cookie(self, r):
        from rustworkers import Response
        return Response(None, "x", 200, {"Content-Type": "text/plain"},
                        cookies={"a": "1; Path=/", "gone": None})

    @api("/fwd")
    def fwd(self, r):
        self.forward("/jobs", {"job": 1})
        self.forward("/raw", b"\x00\x01")
        return None

    def on_disconnect(self, request_id):
        self.disconnected.append(request_id)


class LiveTest(unittest.TestCase):
    def setUp(self):
        self.w = Live(0, None, None, None, log_level="debug")
        self.h = Harness(self.w)

    def tearDown(self):
        self.h.close()

    def test_request_decoding(self):
        frames = self.h.serve(1, "POST", "/ec%68o", "a=1&a=2&b&c=x+y%21&&", headers=[
            ("content-type", "application/json"), ("x-a", "1"), ("x-a", "2"),
            ("cookie", "s=1"), ("cookie", "t=2")], body=b'{"k": [1]}')
        status, d = json_of(frames)
        self.assertEqual(status, 200)
        self.assertEqual(d["path"], "/echo")
        self.assertEqual(d["query"], {"a": ["1", "2"], "b": None, "c": "x y!"})
        self.assertEqual(d["data"], {"k": [1]})
        self.assertEqual(d["headers"]["x-a"], "1, 2")
        self.assertEqual(d["headers"]["cookie"], "s=1; t=2")
        self.assertEqual(d["cookies"], {"s": "1", "t": "2"})
        self.assertEqual((d["ct"], d["remote"], d["id"]), ("application/json", "127.0.0.1", 1))

    def test_no_query_no_body_form_and_raw(self):
        _, d = json_of(self.h.serve(2, "GET", "/echo"))
        self.assertEqual((d["query"], d["data"], d["ct"]), (None, None, ""))
        _, d = json_of(self.h.serve(3, "POST", "/echo", headers=[
            ("content-type", "application/x-www-form-urlencoded")], body=b"a=1&b=%C3%A9"))
        self.assertEqual(d["data"], {"a": "1", "b": "é"})
        _, d = json_of(self.h.serve(4, "POST", "/echo", headers=[
            ("content-type", "application/vnd.x+json")], body=b"{}"))
        self.assertEqual(d["data"], "{}")
        _, d = json_of(self.h.serve(5, "GET", "/echo", "q=1"))
        self.assertEqual(d["query"], {"q": "1"})

    def test_plus_in_path_stays_plus(self):  # QUIRK 7
        status, _ = json_of(self.h.serve(2, "GET", "/a+b"))
        self.assertEqual(status, 404)

    def test_invalid_json_is_400_without_worker(self):
        status, d = json_of(self.h.serve(6, "POST", "/echo", headers=[
            ("content-type", "application/json; charset=utf-8")], body=b"{bad"))
        self.assertEqual((status, d), (400, {"error": "Invalid JSON body"}))

    def test_bad_path_encoding_is_400(self):
        status, _ = json_of(self.h.serve(7, "GET", "/%ff"))
        self.assertEqual(status, 400)

    def test_deferred_respond_and_credits(self):
        frames = self.h.serve(10, "GET", "/hold")
        self.assertEqual([(f.type, f.meta) for f in frames], [(P.CREDIT, {"credits": 2})])
        frames = self.h.serve(11, "GET", "/hold")
        self.assertEqual(frames[-1].meta, {"credits": 3})
        self.w.keep_alive()  # outside a handler: extends all in hand (QUIRK 8)
        hb = self.h.frames()[0]
        self.assertEqual((hb.type, hb.meta), (P.HEARTBEAT, {"in_hand": [10, 11], "extend": [10, 11]}))
        self.w.held[0].respond({"late": True}, 201, {"X": "y"})
        self.w.held[0].respond("dropped")
        frames = self.h.frames()
        self.assertEqual(response_of(frames, 10)[0], 201)
        self.assertEqual(frames[-1].meta, {"credits": 2})
        self.assertEqual(len([f for f in frames if f.type == P.RESPONSE]), 1)

    def test_only_first_response_counts(self):
        self.assertEqual(response_of(self.h.serve(12, "GET", "/now-and-later"))[2], b"first")

    def test_sse_frames(self):
        frames = self.h.serve(20, "GET", "/sse")
        types = [f.type for f in frames if f.type != P.CREDIT]
        self.assertEqual(types, [P.STREAM_START, P.STREAM_CHUNK, P.STREAM_CHUNK, P.STREAM_CHUNK,
                                 P.STREAM_END])
        start = frames[0]
        self.assertEqual(start.meta["status"], 200)
        self.assertEqual(start.meta["headers"], [["X-S", "1"], ["content-type", "text/event-stream"],
                                                 ["cache-control", "no-cache"]])
        chunks = [f.body for f in frames if f.type == P.STREAM_CHUNK]
        self.assertEqual(chunks, [b'data: {"a": 1}\n\n',
                                  b"id: 3\nevent: e\nretry: 10\ndata: l1\ndata: l2\n\n", b"raw"])
        self.assertEqual(self.w._slots, {})

    def test_ndjson_disconnect_and_flow(self):
        frames = self.h.serve(30, "GET", "/ndjson")
        self.assertEqual(frames[0].meta["headers"][0], ["content-type", "application/x-ndjson"])
        self.assertEqual(frames[1].body, b"{}\n")
        r = self.w.held[0]
        self.w._flow(30, True)
        r.send_ndjson({"n": 1})
        r.response_stream_end()
        self.assertEqual([f.type for f in self.h.frames()], [])
        self.w._flow(30, False)
        self.assertEqual([f.type for f in self.h.frames()],
                         [P.STREAM_CHUNK, P.STREAM_END, P.CREDIT])
        self.h.serve(31, "GET", "/ndjson")
        self.w._disconnect(31)
        self.assertEqual(self.w.disconnected, [31])
        self.w.held[1].send_ndjson({"dropped": 1})
        self.assertEqual([f.type for f in self.h.frames()], [P.CREDIT])

    def test_deferred_disconnect_is_silent(self):
        self.h.serve(40, "GET", "/hold")
        self.w._disconnect(40)
        self.assertEqual(self.w.disconnected, [])
        self.w.held[0].respond("dropped")
        self.assertEqual([f.type for f in self.h.frames()], [P.CREDIT])

    def test_log_and_keep_alive_in_handler(self):
        frames = self.h.serve(50, "GET", "/log")
        log = [f for f in frames if f.type == P.LOG][0]
        self.assertEqual((log.request_id, log.meta), (50, {"level": 30, "name": "Live[0]",
                                                           "msg": "hello there"}))
        hb = [f for f in frames if f.type == P.HEARTBEAT][0]
        self.assertEqual(hb.meta, {"in_hand": [50], "extend": [50]})

    def test_unsupported_body_is_500(self):  # QUIRK 5
        frames = self.h.serve(60, "GET", "/set")
        self.assertEqual(response_of(frames)[0], 500)

    def test_cookies_and_case_insensitive_content_type(self):  # QUIRK 6
        status, headers, body = response_of(self.h.serve(61, "GET", "/cookie"))
        self.assertEqual(headers["Content-Type"], "text/plain")
        self.assertNotIn("content-type", headers)

    def test_set_cookie_pairs(self):
        frames = self.h.serve(62, "GET", "/cookie")
        resp = [f for f in frames if f.type == P.RESPONSE][0]
        cookies = [v for k, v in resp.meta["headers"] if k == "set-cookie"]
        self.assertEqual(cookies, ["a=1; Path=/", "gone=; Max-Age=0"])

    def test_forward(self):
        frames = [f for f in self.h.serve(70, "GET", "/fwd") if f.type == P.FORWARD]
        self.assertEqual(frames[0].meta, {"route": "/jobs", "method": "POST",
                                          "content_type": "application/json"})
        self.assertEqual(json.loads(frames[0].body), {"job": 1})
        self.assertEqual(frames[1].meta["content_type"], "application/octet-stream")
        self.assertEqual(frames[1].body, b"\x00\x01")

    def test_forwarded_request(self):
        frames = self.h.serve(71, "POST", "/echo", headers=[("content-type", "application/json")],
                              body=b'{"job": 1}', forwarded=True)
        status, d = json_of(frames, 71)  # a RESPONSE is still sent, to free the slot
        self.assertEqual((d["id"], d["data"], d["headers"], d["query"], d["ct"], d["remote"]),
                         (-1, {"job": 1}, {}, None, None, None))

    def test_pause_resume(self):
        self.w.pause()
        self.w.resume()
        self.assertEqual([f.meta for f in self.h.frames()], [{"credits": 0}, {"credits": 1}])


if __name__ == "__main__":
    unittest.main()
