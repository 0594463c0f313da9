"""The uhttp-workers 1.8.1 compatible worker API (docs/python.md, api doc §1-§17).

Owns: `api`, `_parse_param`, `_match_pattern`, `Request`, `Response`, `RejectRequest`,
`DEFERRED`, `Logger`, `ApiHandler`, `Worker` (routing, the request pipeline, hooks and the
per-request state of deferred/streamed requests). Everything here works without a
transport (constructed in tests); the process main loop lives in `runner.py`, which
attaches a `transport.Transport` to a worker.
"""

import json
import os
import sys
import traceback

from . import httpdata
from . import protocol as P

LOG_CRITICAL = 50
LOG_ERROR = 40
LOG_WARNING = 30
LOG_INFO = 20
LOG_DEBUG = 10
LOG_LEVEL_NAMES = {
    LOG_CRITICAL: "CRITICAL",
    LOG_ERROR: "ERROR",
    LOG_WARNING: "WARNING",
    LOG_INFO: "INFO",
    LOG_DEBUG: "DEBUG",
}
_LEVELS_BY_NAME = {v.lower(): k for k, v in LOG_LEVEL_NAMES.items()}
_LEVELS_BY_NAME["warn"] = LOG_WARNING


def level_from(value, default=LOG_WARNING):
    """Accept an int level or a name ('info', 'WARNING'); unknown -> default."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        return _LEVELS_BY_NAME.get(value.strip().lower(), default)
    return default


class _Deferred:
    __slots__ = ()

    def __repr__(self):
        return "DEFERRED"

    def __reduce__(self):
        return "DEFERRED"


DEFERRED = _Deferred()


class ApiException(Exception):
    pass


class RejectRequest(ApiException):
    """Raise in do_check or a handler: (data, status) becomes the response."""

    def __init__(self, data=None, status=403):
        # Deliberately no Exception.__init__ args: args == (), str(err) == '' (upstream).
        self.data = {"error": "Rejected"} if data is None else data
        self.status = status


# ---------------------------------------------------------------- routing helpers

_CONVERTERS = {"str": str, "int": int, "float": float}


def api(pattern, *methods):
    """Route decorator; returns the same function with `_api_pattern`/`_api_methods`.

    `@api('/x', ['GET', 'POST'])` (one list argument) is accepted as the methods list
    (QUIRK 10 fixed)."""
    if len(methods) == 1 and isinstance(methods[0], (list, tuple)):
        methods = tuple(methods[0])

    def decorate(func):
        func._api_pattern = pattern
        func._api_methods = list(methods) if methods else None
        return func

    return decorate


def websocket(pattern):
    """WebSocket route decorator: `@websocket('/ws/chat/{room}')` on a Worker (or
    ApiHandler) method `handler(self, ws)`, called with a `WebSocket` when a client
    opens one on a matching path (docs/python.md, WebSockets)."""

    def decorate(func):
        func._ws_pattern = pattern
        return func

    return decorate


def _parse_param(segment):
    """`{name}` / `{name:type}` -> (name, converter builtin); else None."""
    if not (segment.startswith("{") and segment.endswith("}")) or len(segment) < 2:
        return None
    inner = segment[1:-1]
    if ":" in inner:
        name, type_name = inner.split(":", 1)
    else:
        name, type_name = inner, "str"
    conv = _CONVERTERS.get(type_name)
    if conv is None:
        raise ValueError("Unknown type converter: %s" % type_name)
    return name, conv


def _match_pattern(pattern, path):
    """-> dict of converted parameters ({} without parameters) or None."""
    pat_segs = [s for s in pattern.split("/") if s]
    path_segs = [s for s in path.split("/") if s]
    if len(pat_segs) != len(path_segs):
        return None
    params = {}
    for pseg, seg in zip(pat_segs, path_segs):
        param = _parse_param(pseg)
        if param is None:
            if pseg != seg:
                return None
            continue
        name, conv = param
        try:
            params[name] = conv(seg)
        except (ValueError, TypeError):
            return None
    return params


def _compile_pattern(pattern):
    """Pattern -> tuple of segments, each a literal `str` or `(name, converter)`; raises
    ValueError for an unknown converter. Done once per route in `_build_routes`."""
    return tuple(_parse_param(seg) or seg for seg in pattern.split("/") if seg)


def _match_compiled(segs, path_segs):
    """`_match_pattern` on a compiled pattern and a split path of the same length."""
    params = {}
    for pseg, seg in zip(segs, path_segs):
        if pseg.__class__ is str:
            if pseg != seg:
                return None
        else:
            try:
                params[pseg[0]] = pseg[1](seg)
            except (ValueError, TypeError):
                return None
    return params


def _decorated(cls, marker="_api_pattern"):
    for name, attr in vars(cls).items():
        if callable(attr) and hasattr(attr, marker):
            yield name, attr


# ---------------------------------------------------------------- Logger


class Logger:
    """uhttp-workers Logger. Records go to `sink(level, name, msg)` when set (a live
    worker's transport), else to stderr as `LEVEL name msg`. Never raises."""

    def __init__(self, name, queue=None, level=LOG_WARNING, sink=None):
        self.name = name
        self.level = level
        self.queue = queue  # accepted for compatibility, unused
        self.sink = sink

    @staticmethod
    def _format(msg, args, kwargs):
        if not args and not kwargs:
            return msg
        try:
            text = msg % args if args else msg
            if kwargs:
                text = text.format(**kwargs)
            return text
        except (TypeError, KeyError, IndexError, ValueError):
            return f"{msg} {args} {kwargs}"

    def _log(self, level, msg, args, kwargs):
        if level < self.level:
            return
        text = self._format(msg, args, kwargs)
        sink = self.sink
        if sink is not None:
            try:
                sink(level, self.name, text)
                return
            except Exception:
                pass
        try:
            sys.stderr.write("%s %s %s\n" % (LOG_LEVEL_NAMES.get(level, level), self.name, text))
            sys.stderr.flush()
        except Exception:
            pass

    def critical(self, msg, *args, **kwargs):
        self._log(LOG_CRITICAL, msg, args, kwargs)

    def error(self, msg, *args, **kwargs):
        self._log(LOG_ERROR, msg, args, kwargs)

    def warning(self, msg, *args, **kwargs):
        self._log(LOG_WARNING, msg, args, kwargs)

    def info(self, msg, *args, **kwargs):
        self._log(LOG_INFO, msg, args, kwargs)

    def debug(self, msg, *args, **kwargs):
        self._log(LOG_DEBUG, msg, args, kwargs)

    @property
    def is_debug(self):
        return self.level <= LOG_DEBUG

    @property
    def is_info(self):
        return self.level <= LOG_INFO

    @property
    def is_warning(self):
        return self.level <= LOG_WARNING

    @property
    def is_error(self):
        return self.level <= LOG_ERROR


# ---------------------------------------------------------------- Request / Response


class Response:
    def __init__(self, request_id, data=None, status=200, headers=None, cookies=None):
        self.request_id = request_id
        self.data = data
        self.status = status
        self.headers = headers
        self.cookies = cookies

    def __repr__(self):
        return "Response(%r, status=%r)" % (self.request_id, self.status)


class Request:
    """One HTTP request as the worker sees it. Bound to its worker while live, so that
    respond()/streaming reach the dispatcher; unbound (constructed, unpickled) requests
    ignore those calls."""

    def __init__(self, request_id, method, path, query=None, data=None, headers=None,
                 content_type=None, remote_address=None, context=None):
        self.request_id = request_id
        self.method = method
        self.path = path
        self.query = query
        self.data = data
        self.headers = headers or {}
        self.content_type = content_type
        self.path_params = {}
        self.remote_address = remote_address
        self.context = context
        self._cookies = None
        self._worker = None
        self._wire_id = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_worker"] = None
        return state

    def __repr__(self):
        return "Request(%r, %r, %r)" % (self.request_id, self.method, self.path)

    @property
    def cookies(self):
        if self._cookies is None:
            cookies = {}
            for part in (self.headers.get("cookie") or "").split(";"):
                if "=" not in part:
                    continue
                key, value = part.split("=", 1)
                key = key.strip()
                if key:
                    cookies[key] = value.strip()
            self._cookies = cookies
        return self._cookies

    # -- responses (no-ops on an unbound request)

    def respond(self, data=None, status=200, headers=None, cookies=None):
        if self._worker is not None:
            self._worker._respond(self, Response(self.request_id, data, status, headers, cookies))

    def response_stream(self, content_type=None, headers=None, cookies=None):
        if self._worker is None:
            return
        headers = dict(headers or {})
        if "content-type" not in headers:
            headers["content-type"] = content_type or "text/event-stream"
        if "cache-control" not in headers:
            headers["cache-control"] = "no-cache"
        self._worker._stream_start(self, httpdata.encode_head(headers, cookies))

    def response_ndjson(self, headers=None, cookies=None):
        self.response_stream("application/x-ndjson", headers, cookies)

    def send_event(self, data=None, event=None, event_id=None, retry=None):
        if self._worker is not None:
            self._worker._stream_chunk(self, format_event(data, event, event_id, retry))

    def send_chunk(self, data):
        if self._worker is not None:
            if isinstance(data, str):
                data = data.encode("utf-8")
            self._worker._stream_chunk(self, bytes(data))

    def send_ndjson(self, obj):
        if self._worker is not None:
            self._worker._stream_chunk(self, (json.dumps(obj) + "\n").encode("utf-8"))

    def response_stream_end(self):
        if self._worker is not None:
            self._worker._stream_end(self)


def format_event(data=None, event=None, event_id=None, retry=None):
    """One SSE event, always framed (QUIRK 4 fixed)."""
    lines = []
    if event_id is not None:
        lines.append("id: %s" % event_id)
    if event is not None:
        lines.append("event: %s" % event)
    if retry is not None:
        lines.append("retry: %s" % retry)
    if data is not None:
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8", "replace")
        if isinstance(data, str):
            lines.extend("data: " + line for line in data.split("\n"))
        else:
            lines.append("data: " + json.dumps(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


# ---------------------------------------------------------------- WebSocket


class WebSocket:
    """One WebSocket of a sync Worker (`@websocket` routes). Everything runs on the
    worker's single loop: callbacks are called from it as frames arrive, and `send()` /
    `close()` write frames (queued in the worker while the dispatcher's FLOW pauses the
    socket). Attributes may be added freely (per-socket state).

    `state`: "connecting" (handler running, or deferred), "open" (accepted), "closed".
    `on_message(ws, data)`: each message, `str` for text, `bytes` for binary.
    `on_close(ws, code, reason)`: once, when either side closed it."""

    def __init__(self, worker, socket_id, request, subprotocols=()):
        self.id = socket_id
        self.request = request
        self.subprotocols = list(subprotocols)
        self.subprotocol = None
        self.state = "connecting"
        self.on_message = None
        self.on_close = None
        self.close_code = None
        self.close_reason = None
        self._worker = worker
        self._paused = False
        self._queue = []          # frames (type, meta, body) held while paused
        self._close_pending = None
        self._held = False        # counts toward the worker's credits

    def __repr__(self):
        return "WebSocket(%r, %r, %s)" % (self.id, self.request.path, self.state)

    @property
    def closed(self):
        return self.state == "closed"

    @property
    def paused(self):
        """True while the dispatcher holds this socket's output (FLOW): `send()` still
        works but queues in the worker's memory."""
        return self._paused

    def accept(self, subprotocol=None, headers=None):
        """Accept the handshake (101). `subprotocol` must be one in `subprotocols`."""
        if self.state != "connecting":
            raise RuntimeError("accept() on a %s websocket" % self.state)
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError("subprotocol %r was not offered by the client" % (subprotocol,))
        pairs = [(k, v) for k, v in httpdata.encode_head(headers)]
        self.subprotocol = subprotocol
        self.state = "open"
        self._worker._send(P.WS_ACCEPT, self.id, P.ws_accept_meta(subprotocol, pairs))

    def reject(self, data=None, status=403, headers=None, cookies=None):
        """Refuse the handshake with an HTTP response (before accept only)."""
        if self.state != "connecting":
            raise RuntimeError("reject() on a %s websocket" % self.state)
        self._worker._send_response(self.id, Response(self.id, data, status, headers, cookies),
                                    self.request)
        self._worker._ws_finished(self, 1000, "", notify=False)

    def send(self, data):
        """A str is sent as a text message, bytes as binary, anything else as JSON text.
        Returns False when the socket is already closed (a race with the client leaving
        is normal: broadcasting to a closing socket is not an error)."""
        if self.state == "connecting":
            raise RuntimeError("send() before accept()")
        if self.state == "closed" or self._close_pending is not None:
            return False
        if isinstance(data, str):
            meta, body = P.WS_TEXT_META, data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            meta, body = P.WS_BINARY_META, bytes(data)
        else:
            meta, body = P.WS_TEXT_META, json.dumps(data).encode("utf-8")
        if self._paused:
            self._queue.append((meta, body))
        else:
            self._worker._send(P.WS_MESSAGE_OUT, self.id, meta, body)
        return True

    def close(self, code=1000, reason=""):
        """Close it (before accept: a refusal, answered 403). Idempotent."""
        if self.state == "closed" or self._close_pending is not None:
            return
        if self._paused and self._queue:
            self._close_pending = (code, reason)  # after the queued messages
            return
        self._worker._send(P.WS_CLOSE_OUT, self.id, P.ws_close_meta(code, reason))
        self._worker._ws_finished(self, code, reason)

    def _flow(self, paused):
        self._paused = paused
        if paused or self.state == "closed":
            return
        queue, self._queue = self._queue, []
        for meta, body in queue:
            self._worker._send(P.WS_MESSAGE_OUT, self.id, meta, body)
        if self._close_pending is not None:
            code, reason = self._close_pending
            self._close_pending = None
            self.close(code, reason)


# ---------------------------------------------------------------- ApiHandler / Worker


class ApiHandler:
    PATTERN = ""

    def __init__(self, worker):
        self.worker = worker


class _Slot:
    """Dispatcher-side bookkeeping for one request id this worker holds."""

    __slots__ = ("request", "state", "streaming", "flow_paused", "buffer", "end_pending")

    def __init__(self, request):
        self.request = request
        self.state = "handling"  # -> "open" (deferred/stream) -> removed when finished
        self.streaming = False
        self.flow_paused = False
        self.buffer = []
        self.end_pending = False


class Worker:
    """Base class for workers (uhttp-workers compatible)."""

    HANDLERS = []
    LOG_NAME = "{cls}[{worker_id}]"

    def __init__(self, worker_id, request_queue=None, control_queue=None, response_queue=None,
                 heartbeat_interval=1, log_level=LOG_WARNING, pool_name=None, **kwargs):
        self._worker_id = worker_id
        self._pool_name = pool_name
        self.heartbeat_interval = heartbeat_interval
        self.kwargs = kwargs
        self.log = Logger("%s[%s]" % (type(self).__name__, worker_id), None,
                          level_from(log_level))
        self._routes = []
        self._routes_by_len = {}
        self._ws_routes = []
        self._sockets = {}  # socket id -> WebSocket not yet closed
        self._handlers = []
        self._accepting = True
        self._readers = {}
        self._writers = {}
        # live-process state (runner.py)
        self._transport = None
        self._pid = None
        self._slots = {}
        self._current = None  # the Request whose handler is running
        self._credits_sent = None

    # -- properties

    @property
    def worker_id(self):
        return self._worker_id

    @property
    def pool_name(self):
        return self._pool_name

    @property
    def pid(self):
        return self._pid

    # -- hooks

    def setup(self):
        pass

    def teardown(self):
        pass

    def on_config(self, config):
        pass

    def on_idle(self):
        pass

    def on_disconnect(self, request_id):
        pass

    def do_check(self, request):
        return None

    def on_request_error(self, request, err):
        self.log.error("%s %s: %s\n%s", request.method, request.path, err,
                       traceback.format_exc())
        return Response(request.request_id, data={"error": str(err)}, status=500)

    # -- routes

    def _build_routes(self):
        routes = []
        ws_routes = []
        for cls in type(self).__mro__:
            for name, attr in _decorated(cls):
                routes.append((attr._api_pattern, attr._api_methods, getattr(self, name)))
            for name, attr in _decorated(cls, "_ws_pattern"):
                ws_routes.append((attr._ws_pattern, getattr(self, name)))
        self._handlers = []
        for handler_cls in self.HANDLERS:
            handler = handler_cls(self)
            self._handlers.append(handler)
            prefix = (handler_cls.PATTERN or "").rstrip("/")
            for cls in type(handler).__mro__:
                if cls is ApiHandler or cls is object:
                    continue
                for name, attr in _decorated(cls):
                    routes.append((prefix + attr._api_pattern, attr._api_methods,
                                   getattr(handler, name)))
                for name, attr in _decorated(cls, "_ws_pattern"):
                    ws_routes.append((prefix + attr._ws_pattern, getattr(handler, name)))
        self._routes = routes
        self._ws_routes = [(_compile_pattern(pattern), handler)
                           for pattern, handler in ws_routes]
        # Patterns compiled once (unknown converters fail here, at build time: QUIRK 2
        # fixed), grouped by segment count: a route can only match a path with as many
        # segments, and each group keeps declaration order, so first match still wins.
        by_len = {}
        for pattern, methods, handler in routes:
            segs = _compile_pattern(pattern)
            literal = segs if all(seg.__class__ is str for seg in segs) else None
            by_len.setdefault(len(segs), []).append(
                (segs, literal, None if methods is None else frozenset(methods), methods,
                 handler))
        self._routes_by_len = by_len

    def _match_route(self, request):
        path_segs = tuple(filter(None, request.path.split("/")))
        method = request.method
        for segs, literal, methods, _m, handler in self._routes_by_len.get(len(path_segs), ()):
            if methods is not None and method not in methods:
                continue
            if literal is not None:
                if literal != path_segs:
                    continue
                params = {}
            else:
                params = _match_compiled(segs, path_segs)
                if params is None:
                    continue
            request.path_params = params
            return handler
        return None

    def _match_ws_route(self, request):
        path_segs = tuple(filter(None, request.path.split("/")))
        for segs, handler in self._ws_routes:
            if len(segs) != len(path_segs):
                continue
            params = _match_compiled(segs, path_segs)
            if params is not None:
                request.path_params = params
                return handler
        return None

    @property
    def websockets(self):
        """The accepted, still open WebSockets of this worker (e.g. to broadcast)."""
        return [ws for ws in self._sockets.values() if ws.state == "open"]

    def _allowed_methods(self, path):
        """Union of the methods of every route matching `path` (QUIRK 1 fixed)."""
        path_segs = tuple(filter(None, path.split("/")))
        allowed = []
        matched = False
        for segs, literal, _ms, methods, _h in self._routes_by_len.get(len(path_segs), ()):
            if literal is not None:
                if literal != path_segs:
                    continue
            elif _match_compiled(segs, path_segs) is None:
                continue
            matched = True
            for m in methods or ():
                if m not in allowed:
                    allowed.append(m)
        return allowed if matched else None

    # -- the request pipeline

    def _process(self, request):
        """-> Response, DEFERRED, or None (on_request_error returned None)."""
        rid = request.request_id
        try:
            check = self.do_check(request)
            if check is not None:
                data, status = check
                return Response(rid, data, status)
        except RejectRequest as err:
            return Response(rid, err.data, err.status)
        except Exception as err:
            self.log.error("do_check: %s\n%s", err, traceback.format_exc())
            return Response(rid, {"error": "Internal server error"}, 500)

        handler = self._match_route(request)
        if handler is None:
            allowed = self._allowed_methods(request.path)
            if allowed is not None:
                return Response(rid, {"error": "Method not allowed"}, 405,
                                {"Allow": ", ".join(allowed)})
            return Response(rid, {"error": "Not found"}, 404)

        try:
            result = handler(request)
            if result is DEFERRED:
                return DEFERRED
            if isinstance(result, Response):
                result.request_id = rid
                return result
            if isinstance(result, tuple):
                if len(result) == 3:
                    data, status, headers = result
                    return Response(rid, data, status, headers)
                data, status = result
                return Response(rid, data, status)
            return Response(rid, result, 200)
        except RejectRequest as err:
            return Response(rid, err.data, err.status)
        except Exception as err:
            try:
                resp = self.on_request_error(request, err)
            except Exception as err2:
                self.log.error("on_request_error failed: %s\n%s", err2, traceback.format_exc())
                return Response(rid, {"error": "Internal server error"}, 500)
            if resp is None:
                return None
            if isinstance(resp, Response):
                resp.request_id = rid
                return resp
            # QUIRK 11 fixed: anything else is a 500, not a lost response.
            self.log.error("on_request_error returned %s, not a Response or None",
                           type(resp).__name__)
            return Response(rid, {"error": "Internal server error"}, 500)

    def _handle_request(self, request):
        """Run the pipeline; -> Response, or None for DEFERRED / no response."""
        resp = self._process(request)
        return None if resp is DEFERRED else resp

    # -- LOG_NAME / memory limit

    def _format_log_name(self):
        template = getattr(self, "LOG_NAME", None) or Worker.LOG_NAME
        try:
            return template.format(cls=type(self).__name__, worker_id=self._worker_id,
                                   pool_name=self._pool_name, pid=os.getpid())
        except (KeyError, IndexError, ValueError) as err:
            self.log.warning("invalid LOG_NAME %r (%s) — using default", template, err)
            return "%s[%s]" % (type(self).__name__, self._worker_id)

    def _apply_memory_limit(self):
        mb = self.kwargs.get("worker_memory_limit_mb")
        if not mb:
            return
        try:
            import resource
        except ImportError:
            return
        try:
            limit = int(mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError) as err:
            self.log.warning("RLIMIT_AS %s MB failed: %s", mb, err)

    # -- control API

    def keep_alive(self):
        """Restart the timeout of the running request; outside a handler, of every
        request in hand (QUIRK 8 fixed)."""
        if self._transport is None:
            return
        if self._current is not None:
            extend = [self._current._wire_id]
        else:
            extend = self._in_hand()
        self._send_heartbeat(extend)

    def pause(self):
        self._accepting = False
        self._update_credits()

    def resume(self):
        self._accepting = True
        self._update_credits()

    def forward(self, route, data):
        if isinstance(data, (bytes, bytearray, memoryview)):
            body, ctype = bytes(data), "application/octet-stream"
        else:
            body, ctype = json.dumps(data).encode("utf-8"), "application/json"
        if self._transport is None:
            self.log.warning("forward to %s dropped: worker not running", route)
            return
        self._send(P.FORWARD, 0, {"route": route, "method": "POST", "content_type": ctype}, body)

    def register_reader(self, fd, cb):
        self._readers[fd] = cb

    def unregister_reader(self, fd):
        self._readers.pop(fd, None)

    def register_writer(self, fd, cb):
        self._writers[fd] = cb

    def unregister_writer(self, fd):
        self._writers.pop(fd, None)

    # -- transport side (no-ops without a transport)

    def _send(self, ftype, rid, meta=None, body=b""):
        if self._transport is not None:
            self._transport.send(ftype, rid, meta, body)

    def _in_hand(self):
        pending = [f.request_id for f in getattr(self, "_pending", ())]
        return sorted(set(self._slots).union(pending, self._sockets))

    def _send_heartbeat(self, extend=()):
        self._send(P.HEARTBEAT, 0, {"in_hand": self._in_hand(), "extend": list(extend)})

    def _update_credits(self):
        if self._transport is None:
            return
        # Every request started and not finished holds a credit: the dispatcher counts
        # the first `credits` it gave as started when the worker dies (prefetch).
        open_count = sum(1 for s in self._slots.values() if s.state == "open")
        open_count += self._open_streams()
        # An open socket holds one of the dispatcher's credits until WS_CLOSE_OUT.
        open_count += sum(1 for ws in self._sockets.values() if ws._held)
        credits = (1 + open_count) if self._accepting else 0
        if credits != self._credits_sent:
            self._credits_sent = credits
            self._send(P.CREDIT, 0, {"credits": credits})

    def _log_sink(self, level, name, msg):
        rid = self._current._wire_id if self._current is not None else 0
        if not isinstance(msg, str):
            msg = str(msg)
        self._transport.send(P.LOG, rid or 0, {"level": level, "name": name, "msg": msg})

    def _finish(self, slot, wire_id):
        self._slots.pop(wire_id, None)
        if slot.state == "open":
            slot.state = "done"
            self._update_credits()
        slot.state = "done"

    def _live_slot(self, request):
        slot = self._slots.get(request._wire_id)
        if slot is None or slot.request is not request or slot.state == "done":
            return None
        return slot

    def _send_response(self, wire_id, resp, request=None):
        try:
            meta, body = httpdata.encode_response(resp.data, resp.status, resp.headers,
                                                  resp.cookies)
        except (TypeError, ValueError) as err:
            # QUIRK 5 fixed: an unsendable response becomes a 500, never silence.
            self.log.error("cannot send response for %s: %s",
                           request.path if request is not None else wire_id, err)
            meta, body = httpdata.encode_response({"error": "Internal server error"}, 500)
        self._send(P.RESPONSE, wire_id, meta, body)

    def _respond(self, request, resp):
        slot = self._live_slot(request)
        if slot is None:
            return  # finished, disconnected or unknown: only the first response counts
        if slot.streaming:
            self.log.warning("response for %s ignored: a stream is open", request.path)
            return
        self._send_response(request._wire_id, resp, request)
        self._finish(slot, request._wire_id)

    def _stream_start(self, request, headers):
        slot = self._live_slot(request)
        if slot is None or slot.streaming:
            return
        slot.streaming = True
        self._send(P.STREAM_START, request._wire_id, {"status": 200, "headers": headers})

    def _stream_chunk(self, request, data):
        slot = self._live_slot(request)
        if slot is None or not slot.streaming or slot.end_pending:
            return  # no open stream: ignored (documented)
        if slot.flow_paused:
            slot.buffer.append(data)
        else:
            self._send(P.STREAM_CHUNK, request._wire_id, None, data)

    def _stream_end(self, request):
        slot = self._live_slot(request)
        if slot is None or not slot.streaming:
            return
        if slot.flow_paused:
            slot.end_pending = True
            return
        self._send(P.STREAM_END, request._wire_id)
        self._finish(slot, request._wire_id)

    def _flow(self, wire_id, paused):
        ws = self._sockets.get(wire_id)
        if ws is not None:
            ws._flow(paused)
            return
        slot = self._slots.get(wire_id)
        if slot is None:
            return
        slot.flow_paused = paused
        if not paused:
            for chunk in slot.buffer:
                self._send(P.STREAM_CHUNK, wire_id, None, chunk)
            slot.buffer = []
            if slot.end_pending:
                self._send(P.STREAM_END, wire_id)
                self._finish(slot, wire_id)

    def _disconnect(self, wire_id):
        ws = self._sockets.get(wire_id)
        if ws is not None:
            # The dispatcher gave up on the socket (e.g. its timeout before accept): no
            # frame goes out for it; the next heartbeat no longer lists it.
            self._ws_finished(ws, 1006, "")
            return
        slot = self._slots.get(wire_id)
        if slot is None:
            return
        was_stream = slot.streaming
        self._finish(slot, wire_id)
        if was_stream:
            self.on_disconnect(slot.request.request_id if slot.request.request_id != -1
                               else wire_id)

    # -- producers the loop drives between frames (WSGI streams, wsgi.py)

    def _pumpable(self):
        """True when `_pump()` has work that needs no waiting."""
        return False

    def _pump(self):
        return False

    def _streaming(self):
        """Streams still being produced (the STOP drain waits for them)."""
        return False

    def _open_streams(self):
        """Started responses produced by `_pump` (each holds a credit)."""
        return 0

    # -- WebSockets (frames from the loop in runner.py)

    def _ws_finished(self, ws, code, reason, notify=True):
        """The socket is finished (WS_CLOSE_OUT or a refusal sent, or dropped by the
        dispatcher): free its credit, then tell `on_close` once."""
        if ws.state == "closed":
            return
        ws.state = "closed"
        ws.close_code, ws.close_reason = code, reason
        ws._queue = []
        self._sockets.pop(ws.id, None)
        if ws._held:
            ws._held = False
            self._update_credits()
        if notify and ws.on_close is not None:
            self._ws_callback(ws, ws.on_close, code, reason)

    def _ws_callback(self, ws, cb, *args):
        """Run a user callback for `ws`; an exception closes the socket with 1011."""
        prev, self._current = self._current, ws.request
        try:
            cb(ws, *args)
        except Exception as err:
            self.log.error("websocket %s: %s\n%s", ws.request.path, err, traceback.format_exc())
            if ws.state != "closed":
                ws.close(1011, "internal error")
        finally:
            self._current = prev

    def _ws_message(self, frame):
        ws = self._sockets.get(frame.request_id)
        if ws is None or ws.state != "open":
            return
        data = P.ws_payload(frame)
        if ws.on_message is None:
            self.log.warning("websocket %s: message dropped, no on_message", ws.request.path)
            return
        self._ws_callback(ws, ws.on_message, data)

    def _ws_closed(self, frame):
        """WS_CLOSE: the client side is closed. WS_CLOSE_OUT frees the credit."""
        ws = self._sockets.get(frame.request_id)
        if ws is None:
            return
        try:
            code = int(frame.meta.get("code", 1005))
        except (TypeError, ValueError):
            code = 1005
        reason = str(frame.meta.get("reason") or "")
        self._send(P.WS_CLOSE_OUT, ws.id, P.ws_close_meta(code, reason))
        self._ws_finished(ws, code, reason)

    def _serve_ws_open(self, frame):
        """WS_OPEN: do_check, route, then the @websocket handler; it accepts (or the
        socket is accepted when it returns), closes/rejects, or returns DEFERRED."""
        sid = frame.request_id
        try:
            request = self._request_from_frame(frame)
        except httpdata.BadRequest as err:
            self._send_response(sid, Response(sid, err.data, err.status))
            return
        request._wire_id = sid
        ws = WebSocket(self, sid, request, frame.meta.get("subprotocols") or ())
        self._sockets[sid] = ws
        self._current = request
        try:
            try:
                check = self.do_check(request)
                if check is not None:
                    data, status = check
                    raise RejectRequest(data, status)
                handler = self._match_ws_route(request)
                if handler is None:
                    raise RejectRequest({"error": "Not found"}, 404)
                result = handler(ws)
            except RejectRequest as err:
                if ws.state == "connecting":
                    ws.reject(err.data, err.status)
                else:
                    ws.close(1008, "rejected")
                return
            except Exception as err:
                self.log.error("websocket %s: %s\n%s", request.path, err,
                               traceback.format_exc())
                # Before accept, a close is a refusal (403); after, 1011.
                ws.close(1011, "internal error")
                return
            if ws.state == "connecting" and result is not DEFERRED:
                ws.accept()
        finally:
            self._current = None
        if ws.state != "closed":
            ws._held = True
            self._update_credits()

    # -- one REQUEST frame

    def _request_from_frame(self, frame):
        meta, body = frame.meta, frame.body
        headers = httpdata.header_dict(meta.get("headers"))
        if meta.get("forwarded"):
            ctype = headers.get("content-type") or meta.get("content_type")
            try:
                data = httpdata.decode_body(ctype, body)
            except httpdata.BadRequest:
                data = bytes(body)
            return Request(-1, meta.get("method") or "POST", meta.get("path") or "/", data=data)
        ctype = headers.get("content-type", "")
        query = meta.get("query")
        return Request(frame.request_id, meta.get("method", "GET"),
                       httpdata.decode_path(meta.get("path") or "/"),
                       query=httpdata.decode_query(query) if query is not None else None,
                       data=httpdata.decode_body(ctype, body) if body else None,
                       headers=headers, content_type=ctype,
                       remote_address=meta.get("remote_addr"),
                       context=meta.get("context"))

    def _serve_frame(self, frame):
        """Handle one REQUEST (or WS_OPEN) frame end to end (decode, pipeline, answer)."""
        if frame.type == P.WS_OPEN:
            self._serve_ws_open(frame)
            return
        wire_id = frame.request_id
        try:
            request = self._request_from_frame(frame)
        except httpdata.BadRequest as err:
            self._send_response(wire_id, Response(wire_id, err.data, err.status))
            return
        request._wire_id = wire_id
        request._worker = self
        slot = _Slot(request)
        self._slots[wire_id] = slot
        self._current = request
        try:
            resp = self._process(request)
        finally:
            self._current = None
        if slot.state == "done":
            return  # answered inside the handler with respond()
        if isinstance(resp, Response):
            self._respond(request, resp)
        else:
            # DEFERRED, or on_request_error returned None: the request stays open
            # (respond()/streaming later; else the dispatcher answers 504).
            slot.state = "open"
            self._update_credits()
