import json
import os
import unittest

from rustworkers import protocol as P

from .helpers import ROOT

GOLDEN = os.path.join(ROOT, "docs", "protocol-golden.json")


def golden():
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


class GoldenTest(unittest.TestCase):
    def test_vectors_present(self):
        self.assertGreater(len(golden()), 0)

    def test_encode_matches_golden(self):
        for v in golden():
            with self.subTest(v["name"]):
                ftype = P.TYPES_BY_NAME[v["type"]]
                body = bytes.fromhex(v["body_hex"])
                frame = P.encode_frame(ftype, v["request_id"], v["meta"], body)
                self.assertEqual(frame.hex(), v["frame_hex"])

    def test_meta_encoding_matches_serde(self):
        # Our JSON writer reproduces the Rust side's meta bytes from the parsed value.
        for v in golden():
            if v["meta"] in ("", "{}"):
                continue
            with self.subTest(v["name"]):
                self.assertEqual(P.encode_meta(json.loads(v["meta"])), v["meta"].encode())

    def test_decode_golden(self):
        for v in golden():
            with self.subTest(v["name"]):
                f = P.decode_frame(bytes.fromhex(v["frame_hex"]))
                self.assertEqual(P.TYPE_NAMES[f.type], v["type"])
                self.assertEqual(f.request_id, v["request_id"])
                self.assertEqual(f.meta, json.loads(v["meta"]) if v["meta"] else {})
                self.assertEqual(f.body.hex(), v["body_hex"])

    def test_decode_all_vectors_split_byte_by_byte(self):
        stream = b"".join(bytes.fromhex(v["frame_hex"]) for v in golden())
        dec = P.FrameDecoder()
        frames = []
        for i in range(len(stream)):
            frames.extend(dec.feed(stream[i:i + 1]))
        self.assertEqual(len(frames), len(golden()))
        self.assertEqual(dec.pending(), 0)

    def test_decode_at_every_split_point(self):
        data = bytes.fromhex(golden()[1]["frame_hex"])
        for cut in range(len(data) + 1):
            dec = P.FrameDecoder()
            got = dec.feed(data[:cut]) + dec.feed(data[cut:])
            self.assertEqual(len(got), 1, cut)


class RoundTripTest(unittest.TestCase):
    def test_roundtrip(self):
        meta = {"status": 200, "headers": [["x", "é"]]}
        data = P.encode_frame(P.RESPONSE, 2 ** 64 - 1, meta, bytes(range(256)))
        f = P.decode_frame(data)
        self.assertEqual(f, P.Frame(P.RESPONSE, 2 ** 64 - 1, meta, bytes(range(256))))

    def test_empty_meta_is_zero_length(self):
        self.assertEqual(P.encode_frame(P.STOP), bytes.fromhex("5257010300000000000000000000000000000000"))

    def test_two_frames_in_one_feed(self):
        data = P.encode_frame(P.STOP) + P.encode_frame(P.DISCONNECT, 5, {})
        self.assertEqual([f.type for f in P.FrameDecoder().feed(data)], [P.STOP, P.DISCONNECT])


class ErrorTest(unittest.TestCase):
    def test_bad_magic(self):
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder().feed(b"XW" + bytes(18))

    def test_bad_magic_detected_on_first_byte(self):
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder().feed(b"G")

    def test_bad_version(self):
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder().feed(b"RW\x02\x03" + bytes(16))

    def test_unknown_type(self):
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder().feed(b"RW\x01\x63" + bytes(16))

    def test_oversized_body(self):
        hdr = P.HEADER.pack(b"RW", 1, P.REQUEST, 1, 0, 1001)
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder(max_body=1000).feed(hdr)

    def test_oversized_meta(self):
        hdr = P.HEADER.pack(b"RW", 1, P.REQUEST, 1, P.MAX_META + 1, 0)
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder().feed(hdr)

    def test_meta_not_object(self):
        with self.assertRaises(P.ProtocolError):
            P.decode_frame(P.encode_frame(P.REQUEST, 1, b"[1]"))

    def test_meta_not_json(self):
        with self.assertRaises(P.ProtocolError):
            P.decode_frame(P.encode_frame(P.REQUEST, 1, b"{nope"))

    def test_encode_unknown_type(self):
        with self.assertRaises(P.ProtocolError):
            P.encode_frame(99)


class FrameLimitTest(unittest.TestCase):
    """CONFIG's max_frame_bytes raises the decoder's limit (issue 7, item 5: a 70 MiB body
    under max_body_bytes = 100 MiB killed the worker at the old 64 MiB cap)."""

    def test_config_raises_the_limit(self):
        from rustworkers.runner import max_frame_bytes
        from rustworkers.transport import Transport
        tr = Transport(-1, -1)
        header = P.HEADER.pack(P.MAGIC, P.VERSION, P.REQUEST, 1, 0, 70 << 20)
        with self.assertRaises(P.ProtocolError):
            P.FrameDecoder(tr.decoder.max_body).feed(header)
        tr.decoder.max_body = max_frame_bytes({"max_frame_bytes": 20 + (1 << 20) + (100 << 20)})
        self.assertEqual(tr.decoder.feed(header), [])  # accepted: waits for the body
        for bad in ({}, {"max_frame_bytes": None}, {"max_frame_bytes": True}, {"max_frame_bytes": -5}):
            self.assertEqual(max_frame_bytes(bad), P.DEFAULT_MAX_BODY, bad)


if __name__ == "__main__":
    unittest.main()


class WebSocketFramesTest(unittest.TestCase):
    """The WS_* encoders give the golden vectors' bytes (docs/protocol.md, WebSockets)."""

    def vector(self, name):
        return next(v for v in golden() if v["name"] == name)

    def test_all_six_types_have_vectors(self):
        types = {v["type"] for v in golden()}
        for name in ("WS_OPEN", "WS_MESSAGE", "WS_CLOSE", "WS_ACCEPT", "WS_MESSAGE_OUT",
                     "WS_CLOSE_OUT"):
            self.assertIn(name, types)
        self.assertEqual([P.WS_OPEN, P.WS_MESSAGE, P.WS_CLOSE], [6, 7, 8])
        self.assertEqual([P.WS_ACCEPT, P.WS_MESSAGE_OUT, P.WS_CLOSE_OUT], [25, 26, 27])

    def test_encoders_match_golden(self):
        cases = {
            "ws_message_text": P.encode_ws_message(P.WS_MESSAGE, 7, "héllo 👋"),
            "ws_message_binary_all_bytes": P.encode_ws_message(P.WS_MESSAGE, 7,
                                                               bytes(range(256))),
            "ws_close_going_away": P.encode_ws_close(P.WS_CLOSE, 7, 1001, "bye"),
            "ws_accept_subprotocol": P.encode_ws_accept(7, "chat", [("x-session", "s1")]),
            "ws_accept_no_subprotocol": P.encode_ws_accept((1 << 64) - 1),
            "ws_message_out_text": P.encode_ws_message(P.WS_MESSAGE_OUT, 7, "ünïcode"),
            "ws_message_out_binary_empty": P.encode_ws_message(P.WS_MESSAGE_OUT, 7, b""),
            "ws_close_out_error": P.encode_ws_close(P.WS_CLOSE_OUT, 7, 1011, "internal error"),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertEqual(data.hex(), self.vector(name)["frame_hex"])

    def test_payload_decoding(self):
        f = P.decode_frame(bytes.fromhex(self.vector("ws_message_text")["frame_hex"]))
        self.assertEqual(P.ws_payload(f), "héllo 👋")
        f = P.decode_frame(bytes.fromhex(self.vector("ws_message_binary_all_bytes")["frame_hex"]))
        self.assertEqual(P.ws_payload(f), bytes(range(256)))
        bad = P.Frame(P.WS_MESSAGE, 7, {"text": True}, b"\xff")
        with self.assertRaises(P.ProtocolError):
            P.ws_payload(bad)
