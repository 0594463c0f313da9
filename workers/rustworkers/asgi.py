"""ASGI 3.0 adapter (HTTP spec 2.4 + lifespan): serve any ASGI application (FastAPI,
Starlette, ...) as a rustworkers worker, launched with
`python -m rustworkers asgi pkg.mod:app [--factory]`.

Owns: one asyncio event loop per process (uvloop when asked for or installed), reading
the request pipe with `loop.add_reader`, up to `concurrency` requests at once (one task
each), the `http` scope and its receive/send channel mapped onto REQUEST / RESPONSE /
STREAM_* frames, FLOW and DISCONNECT per request, heartbeats from the loop, lifespan
startup/shutdown, and the STOP drain. Frames are encoded whole before any byte is
written and written by one non-blocking writer in order, so nothing an app does can
interleave or truncate a frame.
"""

import asyncio
import errno
import fcntl
import os
import sys
import traceback
from urllib.parse import unquote_to_bytes

from . import protocol as P
from .api import LOG_ERROR, LOG_WARNING, level_from
from .runner import (SETUP_FAILED, _heartbeat_interval, handshake, install_signals,
                     load_target, max_frame_bytes)
from .transport import Transport

DEFAULT_CONCURRENCY = 100
# A streaming send() waits while more than this is queued toward the dispatcher (the
# reply pipe is full): the app is paced by the pipe instead of growing our memory.
OUT_HIGH_WATER = 1 << 20

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI 2.4: a subclass of OSError)."""


class StartupFailed(Exception):
    """A setup error reported as a failed start (exit SETUP_FAILED)."""


# ---------------------------------------------------------------- options

def _option(cfg, name, default):
    """A pool option: CONFIG meta key (a dedicated pool key), else `kwargs`, else default."""
    if name in cfg:
        return cfg[name]
    return (cfg.get("kwargs") or {}).get(name, default)


def options(cfg):
    """-> (concurrency, loop kind, lifespan mode); StartupFailed for invalid values."""
    conc = _option(cfg, "concurrency", DEFAULT_CONCURRENCY)
    if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
        raise StartupFailed("concurrency must be an integer >= 1, not %r" % (conc,))
    loop = _option(cfg, "loop", "auto")
    if loop not in ("auto", "asyncio", "uvloop"):
        raise StartupFailed('loop must be "auto", "asyncio" or "uvloop", not %r' % (loop,))
    lifespan = _option(cfg, "lifespan", "auto")
    if lifespan not in ("auto", "on", "off"):
        raise StartupFailed('lifespan must be "auto", "on" or "off", not %r' % (lifespan,))
    return conc, loop, lifespan


def websocket_enabled(cfg):
    """HELLO "websocket": true only toward a dispatcher that can send WS_* frames
    (CONFIG protocol >= 2), unless the pool turned it off (`websocket = false`)."""
    try:
        proto = int(cfg.get("protocol", 1))
    except (TypeError, ValueError):
        proto = 1
    flag = _option(cfg, "websocket", True)
    if not isinstance(flag, bool):
        raise StartupFailed("websocket must be true or false, not %r" % (flag,))
    return flag and proto >= P.WEBSOCKET_PROTOCOL


def new_loop(kind):
    """A fresh event loop: uvloop for "uvloop" (required) or "auto" (when installed)."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise StartupFailed('loop = "uvloop" but uvloop is not installed') from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# ---------------------------------------------------------------- scope

def _latin1(text):
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _server_of(host, scheme):
    default = 443 if scheme == "https" else 80
    if not host:
        return None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return [host, default]
        rest = host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
        return [host[:end + 1], int(port) if port.isdigit() else default]
    name, _, port = host.partition(":")
    return [name, int(port) if port.isdigit() else default]


def build_scope(meta, root_path="", state=None):
    """REQUEST meta -> ASGI `http` scope. `root_path` (the SCRIPT_NAME mount point) is
    set when the path lies under it; `path` keeps the prefix (ASGI 2.4, uvicorn)."""
    raw = meta.get("path") or "/"
    raw_path = _latin1(raw)
    # Most paths have no escape: decoding them is the identity (and costs a call).
    path = unquote_to_bytes(raw_path).decode("utf-8", "replace") if "%" in raw or not raw.isascii() else raw
    root = root_path.rstrip("/")
    if not (root and (path == root or path.startswith(root + "/"))):
        root = ""
    scheme = meta.get("scheme") or "http"
    host = None
    has_ctype = False
    pairs = meta.get("headers") or ()
    try:
        # Pairs of str, all latin-1: one comprehension. Anything else (a value outside
        # latin-1, a non-str) takes the general loop below.
        headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in pairs]
        for name, value in headers:
            if name == b"host":
                if host is None:
                    host = value.decode("latin-1").strip()
            elif name == b"content-type":
                has_ctype = True
    except (UnicodeEncodeError, AttributeError, ValueError, TypeError):
        headers = []
        for pair in pairs:
            name, value = str(pair[0]).lower(), str(pair[1])
            if name == "host" and host is None:
                host = value.strip()
            elif name == "content-type":
                has_ctype = True
            headers.append((_latin1(name), _latin1(value)))
    if meta.get("forwarded") and not has_ctype and meta.get("content_type"):
        headers.append((b"content-type", _latin1(str(meta["content_type"]))))
    addr = meta.get("remote_addr")
    client = [str(addr), int(meta.get("remote_port") or 0)] if addr else None
    query = meta.get("query")
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": str(meta.get("http_version") or "1.1"),
        "method": str(meta.get("method") or "GET").upper(),
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": _latin1(query) if query else b"",
        "root_path": root,
        "headers": headers,
        "client": client,
        "server": _server_of(host, scheme),
        "state": dict(state) if state is not None else {},
        "extensions": {},
    }


def build_ws_scope(meta, root_path="", state=None):
    """WS_OPEN meta -> ASGI `websocket` scope (spec 2.4): the `http` scope's fields less
    `method`, scheme "ws"/"wss", `subprotocols` as offered by the client, and the
    denial-response extension (a RESPONSE before WS_ACCEPT is sent as the HTTP answer)."""
    scope = build_scope(meta, root_path, state)
    scope["type"] = "websocket"
    del scope["method"]
    scope["scheme"] = "wss" if scope["scheme"] in ("https", "wss") else "ws"
    scope["subprotocols"] = [str(p) for p in meta.get("subprotocols") or ()]
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


def _clean(text):
    return "\r" not in text and "\n" not in text and "\0" not in text


def response_head(message):
    """`http.response.start` -> RESPONSE/STREAM_START meta. ValueError/TypeError for a
    status or header the protocol cannot carry (the request then gets a 500)."""
    status = message.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        # 1xx cannot end a request and 600+ is invalid on the wire (protocol.md).
        raise ValueError("invalid status %r" % (status,))
    pairs = []
    for name, value in message.get("headers") or ():
        name = (name if name.__class__ is bytes else bytes(name)).decode("latin-1")
        value = (value if value.__class__ is bytes else bytes(value)).decode("latin-1")
        if _clean(name) and _clean(value):
            pairs.append([name, value])
    return {"status": status, "headers": pairs}


# ---------------------------------------------------------------- output

class Output:
    """Whole frames to the reply pipe, in order, without blocking the loop. Frames sent
    during one turn of the event loop leave in one write at its end (`call_soon`): the
    answers of every task that ran in that turn, for one syscall and one wake-up of the
    dispatcher. What the pipe does not take waits in `buf` until fd 4 is writable."""

    def __init__(self, loop, wfd):
        self.loop = loop
        self.wfd = wfd
        self.buf = bytearray()
        self.broken = False
        self.on_broken = None
        self._waiters = []
        self._flush_scheduled = False
        self._writer_added = False
        os.set_blocking(wfd, False)

    def send(self, ftype, request_id=0, meta=None, body=b""):
        if self.broken:
            return False
        self.buf += P.encode_frame(ftype, request_id, meta, body)  # raises before any write
        if not self._flush_scheduled and not self._writer_added:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return True

    def _flush(self):
        self._flush_scheduled = False
        if self.broken or not self.buf or self._writer_added:
            return
        n = self._write(self.buf)
        if n:
            del self.buf[:n]
        if self.buf and not self.broken:
            self._writer_added = True
            self.loop.add_writer(self.wfd, self._on_writable)
        if len(self.buf) <= OUT_HIGH_WATER:
            self._wake()

    def _write(self, data):
        try:
            return os.write(self.wfd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF):
                self._break()
                return None
            raise

    def _break(self):
        self.broken = True
        self.buf.clear()
        self._wake()
        if self.on_broken is not None:
            self.on_broken()

    def _on_writable(self):
        n = self._write(self.buf)
        if n:
            del self.buf[:n]
        if not self.buf:
            self._writer_added = False
            try:
                self.loop.remove_writer(self.wfd)
            except (ValueError, OSError):
                pass
        if len(self.buf) <= OUT_HIGH_WATER:
            self._wake()

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def drain(self, limit=OUT_HIGH_WATER):
        while len(self.buf) > limit and not self.broken:
            fut = self.loop.create_future()
            self._waiters.append(fut)
            await fut

    def flush_blocking(self):
        """At exit: write what is left, blocking (the dispatcher is reading)."""
        if self.broken or not self.buf:
            return
        self._writer_added = False
        try:
            self.loop.remove_writer(self.wfd)
        except (ValueError, OSError):
            pass
        os.set_blocking(self.wfd, True)
        data = memoryview(bytes(self.buf))
        self.buf.clear()
        while data:
            try:
                data = data[os.write(self.wfd, data):]
            except InterruptedError:
                continue
            except OSError:
                return


# ---------------------------------------------------------------- one request

class Cycle:
    """One request: its task, its receive()/send() and where its response stands."""

    def __init__(self, worker, rid, scope, body):
        self.worker = worker
        self.rid = rid
        self.scope = scope
        self.body = body
        self.task = None
        self.body_taken = False
        self.head = None           # RESPONSE/STREAM_START meta once http.response.start came
        self.streaming = False
        self.complete = False
        self.disconnected = False
        self.paused = False
        self.done_event = asyncio.Event()     # disconnected or response complete
        self.resumed = asyncio.Event()
        self.resumed.set()

    async def receive(self):
        if not self.body_taken:
            self.body_taken = True
            body, self.body = self.body, b""
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done_event.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        if self.disconnected:
            raise ClientDisconnected(errno.EPIPE, "client disconnected")
        kind = message["type"]
        out = self.worker.out
        if kind == "http.response.start":
            if self.head is not None:
                raise RuntimeError("http.response.start sent twice")
            self.head = response_head(message)
        elif kind == "http.response.body":
            if self.head is None:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response completed")
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError("http.response.body body must be bytes, not %s"
                                % type(body).__name__)
            more = bool(message.get("more_body", False))
            if not self.streaming and not more:
                out.send(P.RESPONSE, self.rid, self.head, body)
                self._completed()
                return
            if not self.streaming:
                self.streaming = True
                out.send(P.STREAM_START, self.rid, self.head)
            if body:
                await self._may_send()
                out.send(P.STREAM_CHUNK, self.rid, None, body)
            if not more:
                await self._may_send()
                out.send(P.STREAM_END, self.rid)
                self._completed()
        else:
            raise RuntimeError("unexpected ASGI message %r in an http scope" % (kind,))

    async def _may_send(self):
        """FLOW pause and a full reply pipe hold the stream here."""
        while True:
            if self.disconnected:
                raise ClientDisconnected(errno.EPIPE, "client disconnected")
            if self.paused:
                await self.resumed.wait()
                continue
            if len(self.worker.out.buf) > OUT_HIGH_WATER:
                await self.worker.out.drain()
                continue
            return

    def _completed(self):
        self.complete = True
        self.done_event.set()
        self.worker.request_answered(self)

    def flow(self, paused):
        self.paused = paused
        if paused:
            self.resumed.clear()
        else:
            self.resumed.set()

    def disconnect(self):
        """DISCONNECT (client gone, or the dispatcher's timeout): cancel this task only."""
        if self.disconnected or self.complete:
            return
        self.disconnected = True
        self.done_event.set()
        self.resumed.set()
        self.worker.request_answered(self)
        if self.task is not None:
            self.task.cancel()

    async def run(self):
        w = self.worker
        try:
            await w.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.disconnected:
                self._fail("cancelled")
        except ClientDisconnected:
            pass
        except Exception:
            if not self.disconnected:
                w.log(LOG_ERROR, "%s %s: application error\n%s" % (
                    self.scope["method"], self.scope["path"], traceback.format_exc()), self.rid)
                self._fail("error")
        else:
            if not self.complete and not self.disconnected:
                w.log(LOG_ERROR, "%s %s: ASGI application returned without %s" % (
                    self.scope["method"], self.scope["path"],
                    "completing the response" if self.head else "starting a response"),
                    self.rid)
                self._fail("incomplete")
        finally:
            w.task_done(self)

    def _fail(self, why):
        if self.complete:
            return
        out = self.worker.out
        if not self.streaming:
            # Nothing is on the wire until the first body: a clean 500 is still possible.
            out.send(P.RESPONSE, self.rid,
                     {"status": 500, "headers": [["content-type", "text/plain; charset=utf-8"]]},
                     b"Internal Server Error\n")
        else:
            # Headers and chunks are out: end the stream marked as aborted so the
            # dispatcher cuts the client's response instead of completing it.
            out.send(P.STREAM_END, self.rid, {"abort": True})
        self._completed()


# ---------------------------------------------------------------- one WebSocket

class WsCycle:
    """One WebSocket (WS_OPEN .. WS_CLOSE_OUT): its task, receive()/send() and state.

    `state`: "connecting" (WS_OPEN seen, no answer yet), "accepted" (WS_ACCEPT sent),
    "closed" (WS_CLOSE_OUT or a denial RESPONSE sent: the id is finished, its credit
    free). `client_closed` is set by WS_CLOSE or DISCONNECT from the dispatcher."""

    def __init__(self, worker, sid, scope):
        self.worker = worker
        self.rid = sid
        self.scope = scope
        self.task = None
        self.state = "connecting"
        self.connect_taken = False
        self.client_closed = None      # the websocket.disconnect message once closed
        self.inbox = asyncio.Queue()   # websocket.receive / websocket.disconnect
        self.denial = None             # RESPONSE meta of a websocket.http.response.start
        self.denial_body = []
        self.close_code = 1000
        self.paused = False
        self.resumed = asyncio.Event()
        self.resumed.set()

    # -- the app's channel

    async def receive(self):
        if not self.connect_taken:
            self.connect_taken = True
            return {"type": "websocket.connect"}
        if self.inbox.empty():
            if self.client_closed is not None:
                return dict(self.client_closed)
            if self.state == "closed":  # the app closed it: nothing more will come
                return {"type": "websocket.disconnect", "code": self.close_code, "reason": ""}
        return await self.inbox.get()

    async def send(self, message):
        kind = message["type"]
        if self.client_closed is not None and kind != "websocket.close":
            raise ClientDisconnected(errno.EPIPE, "websocket closed by the client")
        if self.state == "closed" and kind != "websocket.close":
            raise RuntimeError("%s after the websocket was closed" % (kind,))
        out = self.worker.out
        if kind == "websocket.accept":
            if self.state != "connecting" or self.denial is not None:
                raise RuntimeError("websocket.accept in state %s" % self.state)
            sub = message.get("subprotocol")
            if sub is not None and sub not in self.scope["subprotocols"]:
                # The dispatcher may only echo an offered subprotocol (RFC 6455 4.1).
                raise ValueError("subprotocol %r was not offered by the client" % (sub,))
            headers = []
            for name, value in message.get("headers") or ():
                name = bytes(name).decode("latin-1")
                value = bytes(value).decode("latin-1")
                if _clean(name) and _clean(value):
                    headers.append((name, value))
            out.send(P.WS_ACCEPT, self.rid, P.ws_accept_meta(sub, headers))
            self.state = "accepted"
        elif kind == "websocket.send":
            if self.state != "accepted":
                raise RuntimeError("websocket.send before websocket.accept")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
            if text is not None:
                if not isinstance(text, str):
                    raise TypeError("websocket.send text must be str")
                meta, body = P.WS_TEXT_META, text.encode("utf-8")
            else:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError("websocket.send bytes must be bytes")
                meta, body = P.WS_BINARY_META, data
            await self._may_send()
            out.send(P.WS_MESSAGE_OUT, self.rid, meta, body)
        elif kind == "websocket.close":
            if self.state == "closed" or self.client_closed is not None:
                return  # already finished (uvicorn also tolerates a close after disconnect)
            if self.denial is not None:
                raise RuntimeError("websocket.close during a denial response")
            self._close_out(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.state != "connecting" or self.denial is not None:
                raise RuntimeError("websocket.http.response.start in state %s" % self.state)
            self.denial = response_head(message)
        elif kind == "websocket.http.response.body":
            if self.denial is None or self.state != "connecting":
                raise RuntimeError("websocket.http.response.body without a started response")
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError("websocket.http.response.body body must be bytes")
            self.denial_body.append(bytes(body))
            if not message.get("more_body", False):
                # Only a RESPONSE may answer a socket (no STREAM_*): the body is whole.
                out.send(P.RESPONSE, self.rid, self.denial, b"".join(self.denial_body))
                self.denial_body = []
                self._finished()
        else:
            raise RuntimeError("unexpected ASGI message %r in a websocket scope" % (kind,))

    async def _may_send(self):
        """FLOW pause and a full reply pipe hold the sender here."""
        while True:
            if self.client_closed is not None:
                raise ClientDisconnected(errno.EPIPE, "websocket closed by the client")
            if self.paused:
                await self.resumed.wait()
                continue
            if len(self.worker.out.buf) > OUT_HIGH_WATER:
                await self.worker.out.drain()
                continue
            return

    # -- from the dispatcher

    def message(self, frame):
        if self.client_closed is None and self.state != "closed":
            self.inbox.put_nowait({"type": "websocket.receive",
                                   "text" if frame.meta.get("text") else "bytes":
                                   P.ws_payload(frame)})

    def closed_by_client(self, code, reason=""):
        """WS_CLOSE: the app gets websocket.disconnect; WS_CLOSE_OUT at once frees the
        credit (frames for the socket are dropped by the dispatcher from now on)."""
        if self.client_closed is not None:
            return
        self.client_closed = {"type": "websocket.disconnect", "code": code, "reason": reason}
        self.inbox.put_nowait(dict(self.client_closed))
        self.resumed.set()
        if self.state != "closed":
            self._close_out(code, reason)

    def disconnect(self):
        """DISCONNECT (the dispatcher gave up on the socket, e.g. its timeout before
        accept): like a vanished client; the credit is freed by the next heartbeat."""
        if self.client_closed is not None:
            return
        self.client_closed = {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        self.inbox.put_nowait(dict(self.client_closed))
        self.resumed.set()
        if self.state != "closed":
            self._finished(heartbeat=True)

    def flow(self, paused):
        self.paused = paused
        if paused:
            self.resumed.clear()
        else:
            self.resumed.set()

    # -- ending

    def _close_out(self, code, reason=""):
        self.close_code = code
        self.worker.out.send(P.WS_CLOSE_OUT, self.rid, P.ws_close_meta(code, reason))
        self._finished()

    def _finished(self, heartbeat=False):
        if self.state != "closed" and self.client_closed is None:
            # Wakes a receive() waiting in another task of the app.
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": self.close_code,
                                   "reason": ""})
        self.state = "closed"
        self.worker.socket_finished(self, heartbeat)

    async def run(self):
        w = self.worker
        try:
            await w.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            # Overdue STOP or EOF: the server is going away.
            self._fail(1001, "going away")
        except ClientDisconnected:
            pass
        except Exception:
            if self.client_closed is None:
                w.log(LOG_ERROR, "websocket %s: application error\n%s" % (
                    self.scope["path"], traceback.format_exc()), self.rid)
            self._fail(1011, "internal error")
        else:
            if self.state == "connecting" and self.denial is None and \
                    self.client_closed is None:
                w.log(LOG_WARNING, "websocket %s: application returned without accepting"
                      % self.scope["path"], self.rid)
            # Returning without a close: 1000 once accepted, a refusal (403) before.
            self._fail(1000, "")
        finally:
            w.task_done(self)

    def _fail(self, code, reason):
        if self.state == "closed" or self.client_closed is not None:
            return
        if self.denial is not None:
            # A denial response cut short: the HTTP answer can still be a clean 500.
            self.worker.out.send(P.RESPONSE, self.rid, {"status": 500, "headers": [
                ["content-type", "text/plain; charset=utf-8"]]}, b"Internal Server Error\n")
            self._finished()
            return
        # Before accept, any WS_CLOSE_OUT is a refusal: the dispatcher answers 403.
        self._close_out(code, reason)


# ---------------------------------------------------------------- the worker

class AsgiWorker:
    def __init__(self, app, loop, tr, cfg, label, concurrency, lifespan, websocket=False):
        self.app = app
        self.websocket = websocket
        self.loop = loop
        self.tr = tr
        self.cfg = cfg
        self.label = label
        self.concurrency = concurrency
        self.lifespan_mode = lifespan
        self.interval = _heartbeat_interval(cfg)
        self.log_level = level_from(cfg.get("log_level", "warning"))
        self.name = "%s[%s]" % (cfg.get("pool") or label, cfg.get("worker_id", 0))
        self.root_path = os.environ.get("SCRIPT_NAME", "")
        self.state = {}
        self.out = None
        self.cycles = {}       # rid -> Cycle whose task is running
        self.in_hand = set()   # rids not yet answered
        self.stopping = False
        self.overdue = False
        self.finished = None   # future: the exit status
        self._hb = None
        self._hb_soon = False
        self._ls_task = None
        self._ls_queue = None
        self._ls_started = None
        self._ls_stopped = None

    # -- logging: LOG frames once HELLO is out, stderr before

    def log(self, level, msg, rid=0):
        if level < self.log_level:
            return
        if self.out is not None and not self.out.broken:
            try:
                self.out.send(P.LOG, rid, {"level": level, "name": self.name, "msg": msg})
                return
            except P.ProtocolError:
                pass
        sys.stderr.write("%s %s\n" % (self.name, msg))
        sys.stderr.flush()

    # -- lifespan

    async def lifespan_startup(self):
        """-> True to go on; raises StartupFailed when the app's startup failed."""
        if self.lifespan_mode == "off":
            return True
        self._ls_queue = asyncio.Queue()
        self._ls_started = self.loop.create_future()
        self._ls_stopped = self.loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self._ls_task = self.loop.create_task(self._lifespan_main(scope))
        self._ls_queue.put_nowait({"type": "lifespan.startup"})
        ok, detail = await self._ls_started
        if ok is None:  # the app does not speak lifespan ("auto" only)
            last = detail.strip().splitlines()[-1:] or [""]
            sys.stderr.write("INFO %s ASGI 'lifespan' protocol appears unsupported (%s)\n"
                             % (self.name, last[0]))
            sys.stderr.flush()
            self._ls_task = None
            return True
        if not ok:
            raise StartupFailed("ASGI lifespan startup failed:\n%s" % (detail,))
        return True

    async def _lifespan_main(self, scope):
        async def receive():
            return await self._ls_queue.get()

        async def send(message):
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                _settle(self._ls_started, (True, ""))
            elif kind == "lifespan.startup.failed":
                _settle(self._ls_started, (False, message.get("message", "")))
            elif kind == "lifespan.shutdown.complete":
                _settle(self._ls_stopped, (True, ""))
            elif kind == "lifespan.shutdown.failed":
                _settle(self._ls_stopped, (False, message.get("message", "")))
            else:
                raise RuntimeError("unexpected ASGI message %r in a lifespan scope" % (kind,))

        try:
            await self.app(scope, receive, send)
        except Exception:
            tb = traceback.format_exc()
            if not self._ls_started.done():
                # Before startup completed: "auto" takes it as lifespan unsupported
                # (uvicorn's rule); "on" makes it a failed start.
                _settle(self._ls_started, (None if self.lifespan_mode == "auto" else False, tb))
            else:
                _settle(self._ls_stopped, (False, tb))
        finally:
            _settle(self._ls_started, (None if self.lifespan_mode == "auto" else False,
                                       "the lifespan task returned before startup completed"))
            _settle(self._ls_stopped, (True, ""))

    async def lifespan_shutdown(self, grace):
        if self._ls_task is None or self._ls_task.done():
            return
        self._ls_queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            ok, detail = await asyncio.wait_for(asyncio.shield(self._ls_stopped), grace)
        except asyncio.TimeoutError:
            ok, detail = False, "no lifespan.shutdown.complete within %.1f s" % grace
        if not ok:
            self.log(LOG_ERROR, "ASGI lifespan shutdown failed:\n%s" % detail)
        if not self._ls_task.done():
            self._ls_task.cancel()

    # -- frames from the dispatcher

    def _on_readable(self):
        try:
            for frame in self.tr.read_available():
                self.on_frame(frame)
        except P.ProtocolError as err:
            sys.stderr.write("rustworkers: bad frame from dispatcher: %s\n" % err)
            sys.stderr.flush()
            self._finish(1)
            return
        if self.tr.eof:
            self._finish(0)

    def on_frame(self, frame):
        t = frame.type
        if t == P.REQUEST:
            self.start_request(frame)
        elif t == P.WS_OPEN:
            self.start_socket(frame)
        elif t == P.WS_MESSAGE:
            cycle = self.cycles.get(frame.request_id)
            if isinstance(cycle, WsCycle):
                cycle.message(frame)
        elif t == P.WS_CLOSE:
            cycle = self.cycles.get(frame.request_id)
            if isinstance(cycle, WsCycle):
                try:
                    code = int(frame.meta.get("code", 1005))
                except (TypeError, ValueError):
                    code = 1005
                cycle.closed_by_client(code, str(frame.meta.get("reason") or ""))
        elif t == P.DISCONNECT:
            cycle = self.cycles.get(frame.request_id)
            if cycle is not None:
                cycle.disconnect()
        elif t == P.FLOW:
            cycle = self.cycles.get(frame.request_id)
            if cycle is not None:
                cycle.flow(bool(frame.meta.get("paused")))
        elif t == P.STOP:
            self.stop()
        elif t == P.CONFIG:
            self.cfg = frame.meta
            self.tr.decoder.max_body = max_frame_bytes(frame.meta)
            self.interval = _heartbeat_interval(frame.meta)
            if "log_level" in frame.meta:
                self.log_level = level_from(frame.meta["log_level"], self.log_level)
        else:
            self.log(LOG_WARNING, "unexpected %s frame from dispatcher ignored"
                     % P.TYPE_NAMES.get(t, t))

    def start_request(self, frame):
        rid = frame.request_id
        try:
            scope = build_scope(frame.meta, self.root_path, self.state)
        except Exception:  # meta of an unexpected shape: this request fails, not the loop
            self.log(LOG_ERROR, "bad REQUEST meta:\n%s" % traceback.format_exc(), rid)
            self.out.send(P.RESPONSE, rid, {"status": 500, "headers": []}, b"")
            return
        cycle = Cycle(self, rid, scope, frame.body)
        self.cycles[rid] = cycle
        self.in_hand.add(rid)
        cycle.task = self.loop.create_task(cycle.run())

    def start_socket(self, frame):
        sid = frame.request_id
        if not self.websocket:
            # Never announced: a dispatcher that sends it anyway gets it refused (403).
            self.out.send(P.WS_CLOSE_OUT, sid, P.ws_close_meta(1000, ""))
            return
        try:
            scope = build_ws_scope(frame.meta, self.root_path, self.state)
        except Exception:
            self.log(LOG_ERROR, "bad WS_OPEN meta:\n%s" % traceback.format_exc(), sid)
            self.out.send(P.WS_CLOSE_OUT, sid, P.ws_close_meta(1011, ""))
            return
        cycle = WsCycle(self, sid, scope)
        self.cycles[sid] = cycle
        self.in_hand.add(sid)
        cycle.task = self.loop.create_task(cycle.run())

    def socket_finished(self, cycle, heartbeat=False):
        """WS_CLOSE_OUT or a denial RESPONSE sent (or the dispatcher dropped the socket):
        the id leaves `in_hand`; its task may still be finishing."""
        if cycle.rid in self.in_hand:
            self.in_hand.discard(cycle.rid)
            if heartbeat:
                self._heartbeat_soon()
        if self.overdue and cycle.task is not None:
            cycle.task.cancel()  # past the STOP grace: the app gets no more time

    def request_answered(self, cycle):
        """Response complete or client gone: the request leaves `in_hand` (its task may
        still run, e.g. a background task after the response)."""
        if cycle.rid in self.in_hand:
            self.in_hand.discard(cycle.rid)
            if cycle.disconnected:
                self._heartbeat_soon()  # frees the dispatcher's credit now

    def task_done(self, cycle):
        if self.cycles.get(cycle.rid) is cycle:
            del self.cycles[cycle.rid]
        self.in_hand.discard(cycle.rid)
        if self.stopping and not self.cycles:
            self._finish(0)

    # -- heartbeats: from the loop, so a coroutine blocking it is seen as stuck

    def _heartbeat(self):
        self._hb_soon = False
        self.out.send(P.HEARTBEAT, 0, {"in_hand": sorted(self.in_hand), "extend": []})
        if self._hb is not None:
            self._hb.cancel()
        self._hb = self.loop.call_later(self.interval, self._heartbeat)

    def _heartbeat_soon(self):
        if not self._hb_soon and self.out is not None:
            self._hb_soon = True
            self.loop.call_soon(self._heartbeat)

    # -- stopping

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        if not self.cycles:
            self._finish(0)
            return
        try:
            grace = float(self.cfg.get("timeout", 30.0))
        except (TypeError, ValueError):
            grace = 30.0
        self.loop.call_later(grace, self._stop_overdue)

    def _stop_overdue(self):
        # Open sockets are not cut here: the dispatcher closes them (1001 at its
        # shutdown_timeout, or at a reload's drain deadline) and their tasks then end.
        self.overdue = True
        for cycle in list(self.cycles.values()):
            if cycle.task is not None and not self._socket_open(cycle):
                cycle.task.cancel()
        if not any(self._socket_open(c) for c in self.cycles.values()):
            self._finish(0)

    @staticmethod
    def _socket_open(cycle):
        return isinstance(cycle, WsCycle) and cycle.state != "closed" and \
            cycle.client_closed is None

    def _finish(self, code):
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(code)

    # -- the whole life

    async def main(self, wfd):
        try:
            await self.lifespan_startup()
        except StartupFailed as err:
            sys.stderr.write("CRITICAL %s %s\n" % (self.name, err))
            sys.stderr.flush()
            return SETUP_FAILED
        self.finished = self.loop.create_future()
        self.out = Output(self.loop, wfd)
        self.out.on_broken = lambda: self._finish(0)
        hello = {"pid": os.getpid(), "credits": self.concurrency}
        if self.websocket:
            hello["websocket"] = True
        self.out.send(P.HELLO, 0, hello)
        self._heartbeat()
        # Frames read together with CONFIG, then the pipe itself.
        for frame in self.tr.buffered():
            self.on_frame(frame)
        os.set_blocking(self.tr.rfd, False)
        self.loop.add_reader(self.tr.rfd, self._on_readable)
        code = await self.finished
        self.loop.remove_reader(self.tr.rfd)
        for cycle in list(self.cycles.values()):  # EOF, broken pipe or overdue STOP
            if cycle.task is not None:
                cycle.task.cancel()
        if self.cycles:
            await asyncio.gather(*(c.task for c in self.cycles.values() if c.task),
                                 return_exceptions=True)
        try:
            grace = float(self.cfg.get("timeout", 30.0))
        except (TypeError, ValueError):
            grace = 30.0
        await self.lifespan_shutdown(grace)
        if self._hb is not None:
            self._hb.cancel()
        self.out.flush_blocking()
        return code


def _settle(fut, value):
    if fut is not None and not fut.done():
        fut.set_result(value)


def run_asgi(target, factory=False, rfd=3, wfd=4):
    """Run an ASGI worker process; -> the exit status."""
    install_signals()
    tr = Transport(rfd, wfd)
    cfg, code = handshake(tr)
    if cfg is None:
        return code
    label = cfg.get("pool") or target
    loop = None
    try:
        concurrency, loop_kind, lifespan = options(cfg)
        websocket = websocket_enabled(cfg)
        loop = new_loop(loop_kind)
        asyncio.set_event_loop(loop)
        app = load_target(target)
        if factory:
            app = app()
    except Exception as err:
        detail = str(err) if isinstance(err, StartupFailed) else traceback.format_exc()
        sys.stderr.write("CRITICAL %s loading %s failed:\n%s\n" % (label, target, detail))
        sys.stderr.flush()
        if loop is not None:
            loop.close()
        return SETUP_FAILED
    worker = AsgiWorker(app, loop, tr, cfg, label, concurrency, lifespan, websocket)
    try:
        return loop.run_until_complete(worker.main(wfd))
    finally:
        try:
            _cancel_all(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
