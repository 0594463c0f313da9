"""The worker process: start-up handshake and the main loop (docs/protocol.md).

Owns: signal set-up, reading CONFIG, importing and instantiating the user's class (or
WSGI app), the HELLO handshake, and the single-threaded selector loop that reads frames,
runs custom fd callbacks, serves requests one at a time, sends heartbeats and calls
on_idle. Exit status: 0 on STOP / EOF of fd 3, `SETUP_FAILED` (3) for an import,
constructor or setup() failure, n for sys.exit(n), 1 for an exception escaping a hook.
"""

import collections
import faulthandler
import importlib
import os
import selectors
import signal
import sys
import time
import traceback

from . import protocol as P
from .api import LOG_CRITICAL, LOG_ERROR, level_from  # noqa: F401
from .transport import Transport

# HELLO `prefetch`: requests the dispatcher may queue here beyond the credits while its
# pool has a queue (the pool's `prefetch` caps it). Requests are started one at a time in
# the order received, so a prefetched request that was not started is given to another
# worker if this one dies. Reading the next request while answering the last saves a
# sleep and a wake-up per request.
PREFETCH = 16

# Longest time prefetched requests are served back to back without reading the pipe.
BATCH_WINDOW = 0.01

# Exit status of a worker that failed to start (import, constructor, routes, setup(),
# ASGI lifespan startup): non-zero so the dispatcher counts a failed start (restart
# back-off, degraded pool). 3 is gunicorn's WORKER_BOOT_ERROR.
SETUP_FAILED = 3


def load_target(target):
    """'pkg.mod:attr[.attr]' -> the object."""
    if ":" not in target:
        raise ValueError("target %r is not of the form module:attribute" % target)
    mod_name, attr = target.split(":", 1)
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def install_signals():
    # The dispatcher stops workers with STOP or SIGKILL; TERM/INT must not interrupt a
    # handler (a Ctrl-C on the terminal reaches the whole process group).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    if hasattr(signal, "SIGUSR2"):
        try:
            faulthandler.register(signal.SIGUSR2, all_threads=True)
        except (AttributeError, RuntimeError, ValueError):
            pass


def _heartbeat_interval(cfg):
    try:
        value = float(cfg.get("heartbeat_interval", 1.0))
    except (TypeError, ValueError):
        value = 1.0
    return value if value > 0 else 1.0


def _protocol(cfg):
    try:
        return int(cfg.get("protocol", 1))
    except (TypeError, ValueError):
        return 1


def max_frame_bytes(cfg, default=P.DEFAULT_MAX_BODY):
    """CONFIG `max_frame_bytes` (optional): the largest body the dispatcher may send."""
    value = cfg.get("max_frame_bytes")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return default
    return value


def handshake(tr):
    """Read the first frame; -> (CONFIG meta, None) or (None, exit status).
    The decoder's body limit follows CONFIG `max_frame_bytes` from then on."""
    try:
        first = tr.read_frame()
    except P.ProtocolError as err:
        sys.stderr.write("rustworkers: bad frame from dispatcher: %s\n" % err)
        return None, 1
    if first is None:
        return None, 0
    if first.type != P.CONFIG:
        sys.stderr.write("rustworkers: first frame is %s, not CONFIG\n"
                         % P.TYPE_NAMES.get(first.type, first.type))
        return None, 1
    # Bytes read together with CONFIG stay undecoded until the limit is set.
    tr.decoder.max_body = max_frame_bytes(first.meta)
    return first.meta, None


def run(make_worker, rfd=3, wfd=4, label="worker"):
    """Run a worker process. `make_worker(config_meta)` returns an unstarted Worker.
    Returns the exit status (an int, or whatever sys.exit was given)."""
    install_signals()
    tr = Transport(rfd, wfd)
    cfg, code = handshake(tr)
    if cfg is None:
        return code
    # No frame may precede HELLO (protocol.md), so start-up failures and logs before
    # HELLO go to stderr, which the dispatcher captures and logs under the worker's name.
    try:
        worker = make_worker(cfg)
    except Exception:
        sys.stderr.write("CRITICAL %s loading %s failed:\n%s" % (
            cfg.get("pool") or label, label, traceback.format_exc()))
        sys.stderr.flush()
        return SETUP_FAILED
    worker._transport = tr
    worker._pid = os.getpid()
    worker.log.name = worker._format_log_name()
    worker._apply_memory_limit()
    try:
        worker._build_routes()
        worker.setup()
    except Exception:
        worker.log._log(LOG_CRITICAL, "setup() failed:\n%s", (traceback.format_exc(),), {})
        return SETUP_FAILED
    hello = {"pid": os.getpid(), "credits": 1, "prefetch": PREFETCH}
    if worker._ws_routes and _protocol(cfg) >= P.WEBSOCKET_PROTOCOL:
        hello["websocket"] = True  # only a class with @websocket routes takes sockets
    tr.send(P.HELLO, 0, hello)
    worker.log.sink = worker._log_sink
    worker._credits_sent = 1
    worker._update_credits()  # paused in setup()
    return Loop(worker, tr, cfg).run()


class Loop:
    def __init__(self, worker, tr, cfg):
        self.worker = worker
        self.tr = tr
        self.cfg = cfg
        self.interval = _heartbeat_interval(cfg)
        self.stopping = False
        self.stop_deadline = None
        worker._pending = collections.deque()
        self.pending = worker._pending
        self.sel = selectors.DefaultSelector()
        self.sel.register(tr.rfd, selectors.EVENT_READ, None)
        self.custom = {}  # fileno -> mask currently registered

    def run(self):
        code = 0
        try:
            for frame in self.tr.buffered():
                self.on_frame(frame)
            self.loop()
        except SystemExit as exc:
            code = exc.code
        except P.ProtocolError as err:
            sys.stderr.write("rustworkers: bad frame from dispatcher: %s\n" % err)
            code = 1
        except Exception:
            self.worker.log._log(LOG_ERROR, "worker loop failed:\n%s",
                                 (traceback.format_exc(),), {})
            code = 1
        try:
            self.worker.teardown()
        except Exception:
            self.worker.log._log(LOG_ERROR, "teardown() failed:\n%s",
                                 (traceback.format_exc(),), {})
        return code

    # -- frames from the dispatcher

    def on_frame(self, frame):
        w = self.worker
        if frame.type in (P.REQUEST, P.WS_OPEN):
            self.pending.append(frame)
        elif frame.type == P.WS_MESSAGE:
            w._ws_message(frame)
        elif frame.type == P.WS_CLOSE:
            if not self._drop_pending(frame.request_id):
                w._ws_closed(frame)
            else:  # closed before its WS_OPEN was served: only free the credit
                w._send(P.WS_CLOSE_OUT, frame.request_id, P.ws_close_meta(1000, ""))
        elif frame.type == P.STOP:
            self.stopping = True
            try:
                grace = float(self.cfg.get("timeout", 30.0))
            except (TypeError, ValueError):
                grace = 30.0
            self.stop_deadline = time.monotonic() + grace
        elif frame.type == P.CONFIG:
            self.cfg = frame.meta
            self.tr.decoder.max_body = max_frame_bytes(frame.meta)
            self.interval = _heartbeat_interval(frame.meta)
            w.heartbeat_interval = self.interval
            if "log_level" in frame.meta:
                w.log.level = level_from(frame.meta["log_level"], w.log.level)
            w.on_config(frame.meta)
        elif frame.type == P.DISCONNECT:
            self._drop_pending(frame.request_id)
            w._disconnect(frame.request_id)
            # The dispatcher keeps an abandoned request's credit until a heartbeat no
            # longer lists it: say so now, not up to a heartbeat interval later.
            w._send_heartbeat()
        elif frame.type == P.FLOW:
            w._flow(frame.request_id, bool(frame.meta.get("paused")))
        else:
            w.log.warning("unexpected %s frame from dispatcher ignored",
                          P.TYPE_NAMES.get(frame.type, frame.type))

    def _drop_pending(self, rid):
        dropped = False
        for queued in list(self.pending):
            if queued.request_id == rid:
                self.pending.remove(queued)
                dropped = True
        return dropped

    # -- custom fds

    def _sync_custom(self):
        if not self.custom and not self.worker._readers and not self.worker._writers:
            return  # no custom fds: nothing to build per loop turn
        want = {}
        for obj in self.worker._readers:
            fd = obj if isinstance(obj, int) else obj.fileno()
            want[fd] = want.get(fd, 0) | selectors.EVENT_READ
        for obj in self.worker._writers:
            fd = obj if isinstance(obj, int) else obj.fileno()
            want[fd] = want.get(fd, 0) | selectors.EVENT_WRITE
        for fd in list(self.custom):
            if fd not in want:
                self.sel.unregister(fd)
                del self.custom[fd]
        for fd, mask in want.items():
            if fd not in self.custom:
                self.sel.register(fd, mask, None)
            elif self.custom[fd] != mask:
                self.sel.modify(fd, mask, None)
            self.custom[fd] = mask

    def _run_custom(self, readable, writable):
        ran = False
        w = self.worker
        for obj, cb in list(w._writers.items()):
            fd = obj if isinstance(obj, int) else obj.fileno()
            if fd in writable and w._writers.get(obj) is cb:
                cb(obj)
                ran = True
        for obj, cb in list(w._readers.items()):
            fd = obj if isinstance(obj, int) else obj.fileno()
            if fd in readable and w._readers.get(obj) is cb:
                cb(obj)
                ran = True
        return ran

    # -- the loop

    def _open_deferred(self):
        return any(s.state == "open" and not s.streaming for s in self.worker._slots.values())

    def loop(self):
        w, tr = self.worker, self.tr
        now = time.monotonic()
        next_hb = now + self.interval
        last_activity = now
        while True:
            if self.stopping and not self.pending and not w._sockets:
                # Open sockets keep the worker until the dispatcher closes them (1001 at
                # its shutdown_timeout, or when they end during a reload's drain).
                if (not self._open_deferred() and not w._streaming()) or \
                        time.monotonic() >= self.stop_deadline:
                    return
            self._sync_custom()
            can_take = bool(self.pending) and (w._accepting or self.stopping)
            now = time.monotonic()
            timeout = 0 if (can_take or w._pumpable()) else max(0.0, next_hb - now)
            if self.stopping and not can_take:
                timeout = min(timeout, 0.05)
            events = self.sel.select(timeout)
            polled = time.monotonic()
            readable, writable = set(), set()
            got_frames = False
            for key, mask in events:
                if key.fd == tr.rfd:
                    for frame in tr.read_available():
                        got_frames = True
                        self.on_frame(frame)
                    if tr.eof:
                        return
                else:
                    if mask & selectors.EVENT_READ:
                        readable.add(key.fd)
                    if mask & selectors.EVENT_WRITE:
                        writable.add(key.fd)
            if tr.broken:
                return
            ran = self._run_custom(readable, writable) if (readable or writable) else False
            served = False
            if not ran and self.pending and (w._accepting or self.stopping):
                w._serve_frame(self.pending.popleft())
                served = True
                # Prefetched requests already read are served back to back, without a
                # poll between them, while nothing else (custom fds, streams, a due
                # heartbeat) needs a turn, and for at most BATCH_WINDOW: after a slow
                # handler the pipe is polled first, so a DISCONNECT for a request that
                # expired meanwhile drops it unstarted.
                batch = len(self.pending)
                while batch and self.pending and not self.custom and not w._pumpable() \
                        and (w._accepting or self.stopping) and not tr.broken \
                        and (now := time.monotonic()) < next_hb and now - polled < BATCH_WINDOW:
                    w._serve_frame(self.pending.popleft())
                    batch -= 1
            if not ran and w._pumpable():
                served = w._pump() or served
            now = time.monotonic()
            if now >= next_hb:
                w._send_heartbeat()
                next_hb = now + self.interval
            if got_frames or ran or served:
                last_activity = now
            elif not events and now - last_activity >= self.interval:
                w.on_idle()
                last_activity = time.monotonic()
            if tr.broken:
                return
