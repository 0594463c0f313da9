"""Request decoding and response encoding (uhttp-server 3.2 semantics, api doc §7-§8).

Owns: turning REQUEST frame meta + raw body into the values a `Request` carries, and
turning a `Response` into RESPONSE meta (status, header pairs) + body bytes. Pure
functions, no I/O.
"""

import json
from urllib.parse import unquote_to_bytes

from . import protocol as P


class BadRequest(Exception):
    """The request cannot be given to the worker; answer `status` with `data`."""

    def __init__(self, data, status=400):
        super().__init__(data)
        self.data = data
        self.status = status


def _decode(raw, plus_is_space):
    if plus_is_space:
        raw = raw.replace("+", " ")
    # The dispatcher maps bytes >= 0x80 as Latin-1; undo that before percent-decoding.
    try:
        raw_b = raw.encode("latin-1")
    except UnicodeEncodeError:
        raw_b = raw.encode("utf-8")
    return unquote_to_bytes(raw_b).decode("utf-8")


def decode_path(raw):
    """Percent-decode a path as UTF-8. `+` stays `+` (QUIRK 7 fixed: RFC 3986)."""
    if "%" not in raw and raw.isascii():
        return raw  # nothing to decode: the common case
    try:
        return _decode(raw, plus_is_space=False)
    except UnicodeDecodeError:
        raise BadRequest({"error": "Invalid URL encoding"}) from None


def parse_qs(raw):
    """Query / form string -> dict (api doc §7): `+` and %XX decoded, bare key -> None,
    repeated key -> list of values in order."""
    result = {}
    for part in raw.split("&"):
        if not part:
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            value = _decode(value, True)
        else:
            key, value = part, None
        key = _decode(key, True)
        if key in result:
            prev = result[key]
            if isinstance(prev, list):
                prev.append(value)
            else:
                result[key] = [prev, value]
        else:
            result[key] = value
    return result


def decode_query(raw):
    if raw is None:
        return None
    try:
        return parse_qs(raw)
    except UnicodeDecodeError:
        raise BadRequest({"error": "Invalid URL encoding"}) from None


def header_dict(pairs):
    """[[name, value], ...] -> dict, lower-case names, repeats joined (cookie with '; ')."""
    headers = {}
    for pair in pairs or ():
        name, value = pair[0], pair[1]
        # The dispatcher sends str pairs; anything else (a FORWARD's headers) is made one.
        name = (name if name.__class__ is str else str(name)).lower()
        value = (value if value.__class__ is str else str(value)).strip()
        if name in headers:
            sep = "; " if name == "cookie" else ", "
            headers[name] = headers[name] + sep + value
        else:
            headers[name] = value
    return headers


def media_type(content_type):
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(content_type, body):
    """Body -> `Request.data` by media type. Raises BadRequest for invalid JSON."""
    if not body:
        return None
    mtype = media_type(content_type)
    if mtype == "application/x-www-form-urlencoded":
        try:
            return parse_qs(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest({"error": "Invalid form body"}) from None
    if mtype == "application/json":
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest({"error": "Invalid JSON body"}) from None
    return bytes(body)


def cookie_header(name, value):
    if value is None:
        return "%s=; Max-Age=0" % name
    return "%s=%s" % (name, value)


# json.dumps(data) with its defaults, as one C call (protocol.fast_json).
_json_text = P.fast_json(True, ", ", ": ")


def encode_body(data):
    """-> (body bytes, default content-type or None). TypeError for unsupported types."""
    if data is None:
        return b"", None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), "application/octet-stream"
    if isinstance(data, str):
        return data.encode("utf-8"), "text/html; charset=UTF-8"
    if isinstance(data, (dict, list, tuple, int, float)):
        return _json_text(data).encode("ascii"), "application/json"
    raise TypeError("unsupported response body type %s" % type(data).__name__)


def _header_items(headers):
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(k, v) for k, v in headers]


def _clean(text):
    return "\r" not in text and "\n" not in text


def encode_head(headers=None, cookies=None, default_type=None):
    """Header pairs for RESPONSE/STREAM_START meta. `default_type` is added unless a
    content-type is present in any case (QUIRK 6 fixed). Pairs with CR/LF are dropped."""
    pairs = []
    has_type = False
    for k, v in _header_items(headers):
        k, v = str(k), str(v)
        if not (_clean(k) and _clean(v)):
            continue
        if k.lower() == "content-type":
            has_type = True
        pairs.append([k, v])
    if default_type and not has_type:
        pairs.append(["content-type", default_type])
    for name, value in (cookies or {}).items():
        line = cookie_header(str(name), None if value is None else str(value))
        if _clean(line):
            pairs.append(["set-cookie", line])
    return pairs


# RESPONSE meta of a response without headers or cookies, by (status, default type):
# encoded once (a handful of statuses and types in practice; bounded anyway).
_PLAIN_META = {}
_PLAIN_META_MAX = 256


def encode_plain_meta(status, default_type):
    """The RESPONSE meta JSON (bytes) of `status` with only a default content type."""
    key = (status, default_type)
    meta = _PLAIN_META.get(key)
    if meta is None:
        pairs = [["content-type", default_type]] if default_type else []
        meta = json.dumps({"status": status, "headers": pairs},
                          separators=(",", ":")).encode("utf-8")
        if len(_PLAIN_META) < _PLAIN_META_MAX:
            _PLAIN_META[key] = meta
    return meta


def encode_response(data=None, status=200, headers=None, cookies=None):
    """-> (meta: a dict, or its JSON bytes, body bytes). Raises TypeError/ValueError for an unsendable response
    (unsupported body type, status not an int in 100..999); the caller answers 500."""
    if isinstance(status, bool) or not isinstance(status, int):
        try:
            status = int(status)
        except (TypeError, ValueError):
            raise ValueError("invalid status %r" % (status,)) from None
    if not 100 <= status <= 999:
        raise ValueError("invalid status %r" % (status,))
    body, default_type = encode_body(data)
    if not headers and not cookies:
        return encode_plain_meta(status, default_type), body
    return {"status": status, "headers": encode_head(headers, cookies, default_type)}, body
