"""Framing of the rustworkers pipe protocol, version 1 (docs/protocol.md).

Owns: frame type constants, `encode_frame`, the incremental `FrameDecoder`, and
`ProtocolError`. Knows nothing about workers, requests or file descriptors.
"""

import json
import struct

MAGIC = b"RW"
VERSION = 1
HEADER = struct.Struct(">2sBBQII")
HEADER_LEN = HEADER.size  # 20

MAX_META = 1 << 20
DEFAULT_MAX_BODY = 64 << 20

# dispatcher -> worker
CONFIG = 1
REQUEST = 2
STOP = 3
DISCONNECT = 4
FLOW = 5
# dispatcher -> worker, WebSockets (CONFIG "protocol" >= 2, after HELLO "websocket": true)
WS_OPEN = 6
WS_MESSAGE = 7
WS_CLOSE = 8
# worker -> dispatcher
HELLO = 16
RESPONSE = 17
STREAM_START = 18
STREAM_CHUNK = 19
STREAM_END = 20
HEARTBEAT = 21
LOG = 22
CREDIT = 23
FORWARD = 24
WS_ACCEPT = 25
WS_MESSAGE_OUT = 26
WS_CLOSE_OUT = 27

# The CONFIG "protocol" from which the dispatcher may send WS_* frames.
WEBSOCKET_PROTOCOL = 2

TYPE_NAMES = {
    CONFIG: "CONFIG", REQUEST: "REQUEST", STOP: "STOP", DISCONNECT: "DISCONNECT",
    FLOW: "FLOW", HELLO: "HELLO", RESPONSE: "RESPONSE", STREAM_START: "STREAM_START",
    STREAM_CHUNK: "STREAM_CHUNK", STREAM_END: "STREAM_END", HEARTBEAT: "HEARTBEAT",
    LOG: "LOG", CREDIT: "CREDIT", FORWARD: "FORWARD",
    WS_OPEN: "WS_OPEN", WS_MESSAGE: "WS_MESSAGE", WS_CLOSE: "WS_CLOSE",
    WS_ACCEPT: "WS_ACCEPT", WS_MESSAGE_OUT: "WS_MESSAGE_OUT", WS_CLOSE_OUT: "WS_CLOSE_OUT",
}
TYPES_BY_NAME = {v: k for k, v in TYPE_NAMES.items()}


class ProtocolError(Exception):
    """A frame that violates the protocol (bad magic/version/type, too large, bad meta)."""


class Frame:
    __slots__ = ("type", "request_id", "meta", "body")

    def __init__(self, type, request_id=0, meta=None, body=b""):
        self.type = type
        self.request_id = request_id
        self.meta = {} if meta is None else meta
        self.body = body

    def __eq__(self, other):
        return (isinstance(other, Frame) and self.type == other.type
                and self.request_id == other.request_id and self.meta == other.meta
                and bytes(self.body) == bytes(other.body))

    def __repr__(self):
        return "Frame(%s, %d, %r, %d bytes)" % (
            TYPE_NAMES.get(self.type, self.type), self.request_id, self.meta, len(self.body))


def fast_json(ensure_ascii, item_sep, key_sep):
    """`json.dumps(obj, ensure_ascii=..., separators=...)` as one function, without the
    Python layers dumps/encode/iterencode add per call (dumps with arguments even builds a
    JSONEncoder per call): the C encoder, built per call with fresh circular-reference
    markers as iterencode does. Checked against JSONEncoder at import; where the C
    encoder is missing or differs, JSONEncoder.encode."""
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(item_sep, key_sep))
    make = getattr(json.encoder, "c_make_encoder", None)
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring

    def fast(obj):
        return "".join(make({}, encoder.default, strings, None, key_sep, item_sep, False, False, True)(obj, 0))

    probe = {"a": [1, 2.5, "\u00e9\"\n", None, True, {"b": -3}], "c": 1e300}
    try:
        if make is not None and fast(probe) == encoder.encode(probe):
            return fast
    except Exception:
        pass
    return encoder.encode


_meta_json = fast_json(False, ",", ":")


def encode_meta(meta):
    """Compact JSON, non-ASCII kept as UTF-8 (what serde_json writes); `{}`/None -> b''.
    `bytes`/`str` are taken as already-encoded JSON text."""
    if isinstance(meta, (bytes, bytearray)):
        return bytes(meta)
    if isinstance(meta, str):
        return meta.encode("utf-8")
    if not meta:
        return b""
    return _meta_json(meta).encode("utf-8")


def encode_frame(ftype, request_id=0, meta=None, body=b""):
    """Return the bytes of one frame."""
    if ftype not in TYPE_NAMES:
        raise ProtocolError("unknown frame type %r" % (ftype,))
    meta_b = encode_meta(meta)
    body = bytes(body) if body else b""
    if len(meta_b) > MAX_META:
        raise ProtocolError("meta too large: %d bytes" % len(meta_b))
    if len(body) > 0xFFFFFFFF:
        raise ProtocolError("body too large: %d bytes" % len(body))
    if not 0 <= request_id < (1 << 64):
        raise ProtocolError("request id out of range: %r" % (request_id,))
    return HEADER.pack(MAGIC, VERSION, ftype, request_id, len(meta_b), len(body)) + meta_b + body


# ---------------------------------------------------------------- WebSocket frames
# Meta key order is the Rust structs' field order, so these encode byte for byte as the
# golden vectors (docs/protocol-golden.json, ws_*).

def ws_message_meta(text):
    return {"text": bool(text)}


# The two WS_MESSAGE metas, as serde_json writes them: encoded and decoded without json
# on the per-message path.
WS_TEXT_META = b'{"text":true}'
WS_BINARY_META = b'{"text":false}'
_KNOWN_META = {WS_TEXT_META: (("text", True),), WS_BINARY_META: (("text", False),)}


def ws_close_meta(code=1000, reason=""):
    return {"code": int(code), "reason": str(reason or "")}


def ws_accept_meta(subprotocol=None, headers=()):
    return {"subprotocol": subprotocol, "headers": [[str(k), str(v)] for k, v in headers]}


def encode_ws_message(ftype, socket_id, data):
    """WS_MESSAGE / WS_MESSAGE_OUT: a str is a text message (UTF-8), bytes a binary one."""
    if isinstance(data, str):
        return encode_frame(ftype, socket_id, WS_TEXT_META, data.encode("utf-8"))
    return encode_frame(ftype, socket_id, WS_BINARY_META, data)


def encode_ws_accept(socket_id, subprotocol=None, headers=()):
    return encode_frame(WS_ACCEPT, socket_id, ws_accept_meta(subprotocol, headers))


def encode_ws_close(ftype, socket_id, code=1000, reason=""):
    """WS_CLOSE / WS_CLOSE_OUT."""
    return encode_frame(ftype, socket_id, ws_close_meta(code, reason))


def ws_payload(frame):
    """WS_MESSAGE / WS_MESSAGE_OUT -> str (text) or bytes (binary). A text payload that
    is not UTF-8 raises ProtocolError: the protocol guarantees it is."""
    if frame.meta.get("text"):
        try:
            return bytes(frame.body).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("text message is not UTF-8") from None
    return bytes(frame.body)


# json.loads without its Python layers (loads -> decode -> raw_decode): the C scanner.
_scan_json = json.JSONDecoder().scan_once
_JSON_WS = " \t\n\r"  # what JSON calls whitespace (str.strip() would take more)


def _decode_meta(meta_b):
    """Meta bytes -> dict; ProtocolError unless exactly one JSON object (surrounding JSON
    whitespace allowed)."""
    try:
        text = meta_b.decode("utf-8")
        start = 0
        if text[0] in _JSON_WS:
            start = len(text) - len(text.lstrip(_JSON_WS))
        meta, end = _scan_json(text, start)
    except (UnicodeDecodeError, ValueError, IndexError) as err:
        raise ProtocolError("meta is not JSON: %s" % err) from None
    except StopIteration as err:
        raise ProtocolError("meta is not JSON: nothing to decode at %d" % err.value) from None
    if end != len(text) and text[end:].strip(_JSON_WS):
        raise ProtocolError("meta is not JSON: extra data at %d" % end)
    if meta.__class__ is not dict:
        raise ProtocolError("meta is not a JSON object")
    return meta


def _header_error(magic, version, ftype, meta_len, body_len, max_body):
    if magic != MAGIC:
        raise ProtocolError("bad magic %r" % magic)
    if version != VERSION:
        raise ProtocolError("unsupported protocol version %d" % version)
    if ftype not in TYPE_NAMES:
        raise ProtocolError("unknown frame type %d" % ftype)
    if meta_len > MAX_META:
        raise ProtocolError("meta_len %d over limit %d" % (meta_len, MAX_META))
    raise ProtocolError("body_len %d over limit %d" % (body_len, max_body))


class FrameDecoder:
    """Incremental decoder: `feed(bytes)` returns the list of complete frames;
    `push(bytes)` + `frames()` yields them one by one, so a limit change made while
    handling one frame (CONFIG `max_frame_bytes`) applies to the frames after it.

    After a ProtocolError the stream is unusable (there is no resynchronisation).
    """

    def __init__(self, max_body=DEFAULT_MAX_BODY):
        self.max_body = max_body
        self._buf = bytearray()

    def pending(self):
        return len(self._buf)

    def push(self, data):
        self._buf += data

    def missing(self):
        """Bytes still needed to complete the frame in the buffer (0 when unknown): lets
        the reader take a big body in big reads instead of 64 KiB at a time."""
        if len(self._buf) < HEADER_LEN:
            return 0
        _, _, _, _, meta_len, body_len = HEADER.unpack_from(self._buf)
        return max(0, HEADER_LEN + meta_len + body_len - len(self._buf))

    def frames(self):
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def feed(self, data):
        self._buf += data
        return list(self.frames())

    def next_frame(self):
        """The next complete frame in the buffer, or None."""
        buf = self._buf
        if len(buf) < HEADER_LEN:
            # Check what we have of the magic early: a wrong first byte is a violation now.
            if buf and bytes(buf[:2]) != MAGIC[:len(buf[:2])]:
                raise ProtocolError("bad magic %r" % bytes(buf[:2]))
            return None
        magic, version, ftype, rid, meta_len, body_len = HEADER.unpack_from(buf)
        # One test on the common path; the slow path says which rule broke.
        if magic != MAGIC or version != VERSION or ftype not in TYPE_NAMES \
                or meta_len > MAX_META or body_len > self.max_body:
            _header_error(magic, version, ftype, meta_len, body_len, self.max_body)
        total = HEADER_LEN + meta_len + body_len
        if len(buf) < total:
            return None
        meta_end = HEADER_LEN + meta_len
        meta_b = bytes(buf[HEADER_LEN:meta_end])
        body = bytes(buf[meta_end:total]) if body_len else b""
        del buf[:total]
        if meta_len == 0:
            meta = {}
        elif meta_b in _KNOWN_META:
            meta = dict(_KNOWN_META[meta_b])
        else:
            meta = _decode_meta(meta_b)
        return Frame(ftype, rid, meta, body)


def decode_frame(data, max_body=DEFAULT_MAX_BODY):
    """Decode exactly one complete frame from `data` (tests, tools)."""
    dec = FrameDecoder(max_body)
    frames = dec.feed(data)
    if len(frames) != 1 or dec.pending():
        raise ProtocolError("expected exactly one complete frame")
    return frames[0]
