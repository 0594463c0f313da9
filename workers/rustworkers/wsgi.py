"""WSGI adapter (PEP 3333): serve any WSGI application (Flask, Django, ...) as a
rustworkers worker, launched with `python -m rustworkers wsgi pkg.mod:app`.

Owns: building the environ from REQUEST frame meta + body, start_response/write()
semantics, consuming the iterable (close() always called), and 500 on exceptions. A list/tuple
body, or one complete by its Content-Length in the first chunk, is one RESPONSE; any
other iterable is streamed (STREAM_START/CHUNK/END) chunk by chunk as it is produced,
honouring FLOW and DISCONNECT.
"""

import io
import os
import sys
import traceback
from urllib.parse import unquote_to_bytes

from . import protocol as P
from .api import LOG_ERROR, Worker


class ErrorStream:
    """`wsgi.errors`: text up to a write ending in a newline is one ERROR log record."""

    def __init__(self, log):
        self.log = log
        self._buf = ""

    def write(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self._buf += text
        if self._buf.endswith("\n"):
            # One record per completed write: a logged traceback stays one LOG frame.
            record, self._buf = self._buf[:-1], ""
            self.log._log(LOG_ERROR, record, (), {})
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if self._buf:
            line, self._buf = self._buf, ""
            self.log._log(LOG_ERROR, line, (), {})


def _latin1(text):
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _split_host(host, default_port):
    if not host:
        return "localhost", default_port
    if host.startswith("["):
        end = host.find("]")
        name = host[:end + 1] if end > 0 else host
        rest = host[end + 1:] if end > 0 else ""
        port = rest[1:] if rest.startswith(":") and rest[1:].isdigit() else default_port
        return name, port
    if ":" in host:
        name, port = host.rsplit(":", 1)
        return name, port if port.isdigit() else default_port
    return host, default_port


# The keys every environ has with the same value (PEP 3333), copied per request.
_ENVIRON_BASE = {
    "wsgi.version": (1, 0),
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
}


# Per-request work that depends only on a header name, a Host value or the HTTP version
# is memoised: the same few recur on every request. Bounded, since clients choose them.
_MEMO_MAX = 512
_HTTP_KEYS = {}     # header name -> its HTTP_* environ key
_HOSTS = {}         # (Host value, default port) -> (SERVER_NAME, SERVER_PORT)
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def _http_key(name):
    key = _HTTP_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_HTTP_KEYS) < _MEMO_MAX:
            _HTTP_KEYS[name] = key
    return key


def _server_of(host, default_port):
    memo = (host, default_port)
    server = _HOSTS.get(memo)
    if server is None:
        server = _split_host(host, default_port)
        if len(_HOSTS) < _MEMO_MAX:
            _HOSTS[memo] = server
    return server


def build_environ(meta, body, errors, mount=None):
    """PEP 3333 environ of one REQUEST. `mount`: the SCRIPT_NAME prefix (a worker reads
    it from its environment once; None reads it now)."""
    get = meta.get
    scheme = get("scheme") or "http"
    path = get("path") or "/"
    # PEP 3333: the percent-decoded bytes as a latin-1 "native string".
    if "%" in path or not path.isascii():
        path_info = unquote_to_bytes(_latin1(path)).decode("latin-1")
    else:
        path_info = path  # nothing to decode: the common case
    # An app mounted under a prefix (pool routes "/app/**"): like gunicorn, the SCRIPT_NAME
    # environment variable names the mount point and is moved from PATH_INFO to SCRIPT_NAME.
    script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/") if mount is None else mount
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name):]
    else:
        script_name = ""
    version = get("http_version") or "1.1"
    addr = get("remote_addr")
    port = get("remote_port")
    forwarded = get("forwarded")
    environ = {
        **_ENVIRON_BASE,
        "REQUEST_METHOD": get("method") or "GET",
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": get("query") or "",
        "SERVER_PROTOCOL": _PROTOCOLS.get(version) or "HTTP/%s" % (version,),
        "REMOTE_ADDR": addr if addr.__class__ is str else str(addr or ""),
        "REMOTE_PORT": str(port or ""),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": errors,
        "rustworkers.x_request_id": get("x_request_id"),
        "rustworkers.context": get("context"),
        "rustworkers.forwarded": bool(forwarded),
    }
    host = None
    has_length = False
    for name, value in get("headers") or ():
        name = (name if name.__class__ is str else str(name)).lower()
        value = (value if value.__class__ is str else str(value)).strip()
        if name == "host" and host is None:
            host = value
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "content-length":
            has_length = True
            continue
        if "_" in name:
            continue  # ambiguous with '-' once mapped: dropped, as gunicorn/nginx do
        key = _http_key(name)
        if key in environ:
            sep = "; " if name == "cookie" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value
    if body or has_length:
        environ["CONTENT_LENGTH"] = str(len(body))
    if forwarded and "CONTENT_TYPE" not in environ and get("content_type"):
        environ["CONTENT_TYPE"] = meta["content_type"]
    environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_of(host, "443" if scheme == "https" else "80")
    return environ


class WsgiCall:
    """One application call (PEP 3333): start_response/write(), the iterable pulled one
    chunk at a time, `close()` always called once. `head()` is valid once the first
    non-empty chunk came (or the iterable ended): headers are not sent before that."""

    def __init__(self, app, environ, log):
        self.app = app
        self.environ = environ
        self.log = log
        self.status = None
        self.headers = None
        self.sent = False        # a body byte was produced: exc_info must re-raise
        self.written = []        # write() data not yet handed out
        self.result = None
        self.it = None
        self.closed = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status = status
        self.headers = list(headers)
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if data:
            self.sent = True
            self.written.append(bytes(data))

    def begin(self):
        self.result = self.app(self.environ, self.start_response)
        self.it = iter(self.result)

    def next_chunk(self):
        """The next non-empty chunk, or None at the end (then close() has been called)."""
        while True:
            if self.written:
                return self.written.pop(0)
            try:
                chunk = next(self.it)
            except StopIteration:
                if self.written:
                    continue
                self.close()
                return None
            if chunk:
                self.sent = True
                return bytes(chunk)

    def head(self):
        """-> (status int, header pairs); raises for a missing or invalid status."""
        if self.status is None:
            raise AssertionError("application returned without calling start_response()")
        code = int(str(self.status).split(None, 1)[0])
        if not 100 <= code <= 999:
            raise ValueError("invalid status %r" % self.status)
        return code, [[str(k), str(v)] for k, v in self.headers]

    def content_length(self):
        for k, v in self.headers or ():
            if str(k).lower() == "content-length":
                try:
                    return int(v)
                except (TypeError, ValueError):
                    return None
        return None

    def buffered(self):
        """True when the whole body is known to be in memory or about to be: a list or
        tuple (the common `return [body]`)."""
        return isinstance(self.result, (list, tuple))

    def close(self):
        if self.closed:
            return
        self.closed = True
        close = getattr(self.result, "close", None)
        if close is not None:
            close()

    def log_error(self):
        self.log._log(LOG_ERROR, "%s %s: application error\n%s",
                      (self.environ.get("REQUEST_METHOD"), self.environ.get("PATH_INFO"),
                       traceback.format_exc()), {})


ERROR_500 = (500, [["content-type", "text/plain; charset=utf-8"]], b"Internal Server Error\n")


def call_app(app, environ, log):
    """Run the app to the end; -> (status int, header pairs, body bytes). Never raises
    Exception (a failing app is a 500, logged)."""
    call = WsgiCall(app, environ, log)
    try:
        try:
            call.begin()
            chunks = []
            while True:
                chunk = call.next_chunk()
                if chunk is None:
                    break
                chunks.append(chunk)
        finally:
            call.close()
        code, pairs = call.head()
        return code, pairs, b"".join(chunks)
    except Exception:
        call.log_error()
        return ERROR_500


class WsgiWorker(Worker):
    """A Worker whose every request goes to a WSGI app (no @api routes)."""

    def __init__(self, worker_id, request_queue=None, control_queue=None, response_queue=None,
                 heartbeat_interval=1, log_level=30, pool_name=None, app=None, **kwargs):
        super().__init__(worker_id, request_queue, control_queue, response_queue,
                         heartbeat_interval=heartbeat_interval, log_level=log_level,
                         pool_name=pool_name, **kwargs)
        self.app = app
        self.errors = ErrorStream(self.log)
        self._streams = {}  # request id -> _Stream being pumped
        # SCRIPT_NAME mount point: the environment does not change under a worker.
        self._mount = os.environ.get("SCRIPT_NAME", "").rstrip("/")

    def _format_log_name(self):
        name = getattr(self.app, "__name__", None) or type(self.app).__name__
        return "%s[%s]" % (self._pool_name or name, self._worker_id)

    def handle_wsgi(self, meta, body):
        """-> (status, header pairs, body) for one request, run to the end (tests)."""
        environ = build_environ(meta, body, self.errors)
        return call_app(self.app, environ, self.log)

    # -- streaming: a response whose body is not known at once goes out as STREAM_*,
    # one chunk per loop iteration (runner.py `_pump`), so FLOW, DISCONNECT, heartbeats
    # and STOP are handled between chunks.

    def _serve_frame(self, frame):
        rid = frame.request_id
        call = WsgiCall(self.app, build_environ(frame.meta, frame.body, self.errors, self._mount),
                        self.log)
        try:
            call.begin()
            if call.buffered() and not call.written and call.status is not None:
                # `return [body]`, the common case: the whole body at once.
                body = b"".join(call.result)
                call.close()
                code, pairs = call.head()
                if 200 <= code <= 599:
                    self.errors.flush()
                    self._send(P.RESPONSE, rid, {"status": code, "headers": pairs}, body)
                    return
            chunks = []
            chunk = call.next_chunk()
            if chunk is not None:
                chunks.append(chunk)
                length = call.content_length()
                if call.buffered() or (length is not None and len(chunk) >= length):
                    # All in memory (a list) or complete by Content-Length: one RESPONSE.
                    while chunk is not None:
                        chunk = call.next_chunk()
                        if chunk is not None:
                            chunks.append(chunk)
            code, pairs = call.head()
            if call.closed:
                self.errors.flush()
                self._send(P.RESPONSE, rid, {"status": code, "headers": pairs},
                           b"".join(chunks))
                return
        except Exception:
            call.log_error()
            call_close(call, self.log)
            self.errors.flush()
            status, headers, body = ERROR_500
            self._send(P.RESPONSE, rid, {"status": status, "headers": headers}, body)
            return
        if not 200 <= code <= 599:
            # STREAM_START takes 200..=599 only: the body is read whole and sent as a
            # plain RESPONSE instead (interim or bogus statuses are the app's bug).
            call_close(call, self.log)
            self._send(P.RESPONSE, rid, {"status": 500, "headers": ERROR_500[1]}, ERROR_500[2])
            return
        self._send(P.STREAM_START, rid, {"status": code, "headers": pairs})
        self._send(P.STREAM_CHUNK, rid, None, chunks[0])
        self._streams[rid] = _Stream(call)
        self._update_credits()
        self.errors.flush()

    def _pumpable(self):
        return any(not st.paused for st in self._streams.values())

    def _pump(self):
        """Pull one chunk from each running stream; -> True if any work was done."""
        did = False
        for rid, st in list(self._streams.items()):
            if st.paused:
                continue
            did = True
            try:
                chunk = st.call.next_chunk()
            except Exception:
                st.call.log_error()
                call_close(st.call, self.log)
                self._streams.pop(rid, None)
                self._send(P.STREAM_END, rid, {"abort": True})
                continue
            if chunk is None:
                self._streams.pop(rid, None)
                self._send(P.STREAM_END, rid)
            else:
                self._send(P.STREAM_CHUNK, rid, None, chunk)
        self._update_credits()  # a finished stream frees its credit
        self.errors.flush()
        return did

    def _flow(self, wire_id, paused):
        st = self._streams.get(wire_id)
        if st is not None:
            st.paused = paused

    def _disconnect(self, wire_id):
        st = self._streams.pop(wire_id, None)
        if st is not None:
            call_close(st.call, self.log)
            self._update_credits()

    def _in_hand(self):
        return sorted(set(super()._in_hand()).union(self._streams))

    def _streaming(self):
        return bool(self._streams)

    def _open_streams(self):
        return len(self._streams)

    def teardown(self):
        for rid in list(self._streams):
            self._disconnect(rid)
        super().teardown()


class _Stream:
    __slots__ = ("call", "paused")

    def __init__(self, call):
        self.call = call
        self.paused = False


def call_close(call, log):
    """close() that cannot raise past us (PEP 3333: it is always called)."""
    try:
        call.close()
    except Exception:
        log._log(LOG_ERROR, "close() of the response iterable failed:\n%s",
                 (traceback.format_exc(),), {})
