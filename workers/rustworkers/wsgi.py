"""WSGI adapter (PEP 3333): serve any WSGI application (Flask, Django, ...) as a
rustworkers worker, launched with `python -m rustworkers wsgi pkg.mod:app`.

Owns: building the environ from REQUEST frame meta + body, start_response/write()
semantics, consuming the iterable (close() always called), and 500 on exceptions. The
response is buffered and sent as one RESPONSE frame.
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


def build_environ(meta, body, errors):
    scheme = meta.get("scheme") or "http"
    path = meta.get("path") or "/"
    # PEP 3333: the percent-decoded bytes as a latin-1 "native string".
    path_info = unquote_to_bytes(_latin1(path)).decode("latin-1")
    # An app mounted under a prefix (pool routes "/app/**"): like gunicorn, the SCRIPT_NAME
    # environment variable names the mount point and is moved from PATH_INFO to SCRIPT_NAME.
    script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name):]
    else:
        script_name = ""
    environ = {
        "REQUEST_METHOD": meta.get("method") or "GET",
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": meta.get("query") or "",
        "SERVER_PROTOCOL": "HTTP/%s" % (meta.get("http_version") or "1.1"),
        "REMOTE_ADDR": str(meta.get("remote_addr") or ""),
        "REMOTE_PORT": str(meta.get("remote_port") or ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(bytes(body)),
        "wsgi.errors": errors,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "rustworkers.x_request_id": meta.get("x_request_id"),
        "rustworkers.context": meta.get("context"),
        "rustworkers.forwarded": bool(meta.get("forwarded")),
    }
    host = None
    for name, value in meta.get("headers") or ():
        name = str(name).lower()
        value = str(value).strip()
        if name == "host" and host is None:
            host = value
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "content-length":
            continue
        if "_" in name:
            continue  # ambiguous with '-' once mapped: dropped, as gunicorn/nginx do
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            sep = "; " if name == "cookie" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value
    if body or any(str(n).lower() == "content-length" for n, _ in meta.get("headers") or ()):
        environ["CONTENT_LENGTH"] = str(len(body))
    if meta.get("forwarded") and "CONTENT_TYPE" not in environ and meta.get("content_type"):
        environ["CONTENT_TYPE"] = meta["content_type"]
    default_port = "443" if scheme == "https" else "80"
    environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(host, default_port)
    return environ


def call_app(app, environ, log):
    """Run the app; -> (status int, header pairs, body bytes). Never raises Exception."""
    state = {"status": None, "headers": None, "sent": False}
    chunks = []

    def write(data):
        if state["status"] is None:
            raise AssertionError("write() before start_response()")
        state["sent"] = True
        chunks.append(bytes(data))

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if state["sent"]:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif state["status"] is not None:
            raise AssertionError("start_response() called twice without exc_info")
        state["status"] = status
        state["headers"] = list(headers)
        return write

    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                if chunk:
                    state["sent"] = True
                    chunks.append(bytes(chunk))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if state["status"] is None:
            raise AssertionError("application returned without calling start_response()")
        code = int(str(state["status"]).split(None, 1)[0])
        if not 100 <= code <= 999:
            raise ValueError("invalid status %r" % state["status"])
        pairs = [[str(k), str(v)] for k, v in state["headers"]]
        return code, pairs, b"".join(chunks)
    except Exception:
        log._log(LOG_ERROR, "%s %s: application error\n%s",
                 (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                  traceback.format_exc()), {})
        return 500, [["content-type", "text/plain; charset=utf-8"]], b"Internal Server Error\n"


class WsgiWorker(Worker):
    """A Worker whose every request goes to a WSGI app (no @api routes)."""

    def __init__(self, worker_id, request_queue=None, control_queue=None, response_queue=None,
                 heartbeat_interval=1, log_level=30, pool_name=None, app=None, **kwargs):
        super().__init__(worker_id, request_queue, control_queue, response_queue,
                         heartbeat_interval=heartbeat_interval, log_level=log_level,
                         pool_name=pool_name, **kwargs)
        self.app = app
        self.errors = ErrorStream(self.log)

    def _format_log_name(self):
        name = getattr(self.app, "__name__", None) or type(self.app).__name__
        return "%s[%s]" % (self._pool_name or name, self._worker_id)

    def handle_wsgi(self, meta, body):
        """-> (status, header pairs, body) for one request (also used by tests)."""
        environ = build_environ(meta, body, self.errors)
        return call_app(self.app, environ, self.log)

    def _serve_frame(self, frame):
        status, headers, body = self.handle_wsgi(frame.meta, frame.body)
        self.errors.flush()
        self._send(P.RESPONSE, frame.request_id, {"status": status, "headers": headers}, body)
