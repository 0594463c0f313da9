"""The fork-server of a `preload = true` pool (docs/python.md, "Preloading").

    python -m rustworkers forkserver {worker|wsgi|asgi} pkg.mod:target [--factory]

Owns: importing the app's module once, `gc.freeze()`, then forking one worker per request
of the dispatcher. Its fds 3 and 4 are one Unix stream socket to the dispatcher:

- it says `{"ready": true, "pid": N}` once the import is done (or exits with status 3,
  the traceback on stderr, if it fails);
- each request is one JSON line `{"worker_id": N, "dispatcher": PID}` carrying four fds
  (SCM_RIGHTS): the worker's request pipe, reply pipe, stdout and stderr;
- each answer is one JSON line, `{"pid": N}` or `{"error": "..."}`.

A worker is forked twice: the middle process exits at once, so the worker is re-parented
to the dispatcher (a child subreaper), which supervises and reaps it like any worker it
forked itself; the fork-server only reaps the middle process. The worker then waits until
it is the dispatcher's child, asks for SIGKILL when the dispatcher dies, starts its own
session, puts the four fds on 3, 4, 1 and 2, closes everything else and runs the usual
worker main (CONFIG, HELLO, ...), where loading the target finds the module imported.
"""

import ctypes
import fcntl
import gc
import json
import os
import resource
import signal
import socket
import sys
import time
import traceback

from . import __main__ as shim_main  # noqa: F401  (imported once, here)
from . import runner  # noqa: F401

# The fds a request carries, in order, and where the worker gets them.
_TARGET_FDS = (3, 4, 1, 2)
_PR_SET_PDEATHSIG = 1


def _preload(kind, target):
    """Import the target's module (not the factory call: each worker makes its own app,
    so no connection or thread is shared across forks)."""
    mod_name = target.split(":", 1)[0]
    if kind == "asgi":
        from . import asgi  # noqa: F401  (the adapter and asyncio, imported once)
        try:
            import uvloop  # noqa: F401  (imported, not started: each worker makes its loop)
        except ImportError:
            pass
    elif kind == "wsgi":
        from . import wsgi  # noqa: F401
    __import__(mod_name)


def _send(sock, obj):
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def _recv_request(sock, buf):
    """-> (request dict, [fds]) or (None, []) at EOF. Requests are one at a time: the
    dispatcher waits for each answer, so a read never holds the start of the next one."""
    fds = []
    while b"\n" not in buf:
        data, got, _flags, _addr = socket.recv_fds(sock, 4096, 4)
        fds.extend(got)
        if not data:
            for fd in fds:
                os.close(fd)
            return None, []
        buf.extend(data)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line), fds


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _prctl_pdeathsig():
    try:
        return _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except AttributeError:  # no libc handle, or no prctl (not Linux)
        return False


def _become_worker(argv, fds, worker_id, dispatcher, middle):
    """In the forked worker: never returns."""
    code = 1
    try:
        # The middle process exits right after forking us: wait to be the dispatcher's.
        deadline = time.monotonic() + 5
        while os.getppid() == middle and time.monotonic() < deadline:
            time.sleep(0.0002)
        if not _prctl_pdeathsig() or os.getppid() != dispatcher:
            os._exit(1)  # the dispatcher is gone (or cannot supervise us): nothing to do
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Above every target first, so no dup2 overwrites a source still to be moved.
        high = [_dup_above(fd, 10) for fd in fds]
        for src, dst in zip(high, _TARGET_FDS):
            # stdout/stderr are inherited by the app's subprocesses; the frame pipes not.
            os.dup2(src, dst, inheritable=dst in (1, 2))
        os.closerange(5, _max_fd())
        os.environ["RUSTWORKERS_WORKER_ID"] = str(worker_id)
        code = shim_main.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _dup_above(fd, low):
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)


def _max_fd():
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return soft if 0 < soft < (1 << 20) else (1 << 20)
    except (ValueError, OSError):
        return 65536


def _fork_worker(argv, req, fds):
    """-> the worker's pid. Raises OSError if a fork fails."""
    worker_id, dispatcher = int(req["worker_id"]), int(req["dispatcher"])
    sys.stdout.flush()
    sys.stderr.flush()
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(pid_r)
            me = os.getpid()  # before the fork: by the time the worker asks, we may be gone
            worker = os.fork()
            if worker == 0:
                os.close(pid_w)
                _become_worker(argv, fds, worker_id, dispatcher, me)
            os.write(pid_w, str(worker).encode())
        finally:
            os._exit(0)
    os.close(pid_w)
    data = b""
    while True:
        chunk = os.read(pid_r, 64)
        if not chunk:
            break
        data += chunk
    os.close(pid_r)
    while True:
        try:
            os.waitpid(middle, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    if not data:
        raise OSError("the middle process died before forking the worker")
    return int(data)


def serve(argv):
    """The fork-server's main; `argv` is the worker command line (kind, target, ...)."""
    if len(argv) < 2 or argv[0] not in ("worker", "wsgi", "asgi"):
        sys.stderr.write("usage: python -m rustworkers forkserver {worker|wsgi|asgi} "
                         "pkg.mod:target [--factory]\n")
        return 2
    kind, target = argv[0], argv[1]
    # TERM/INT reach the whole terminal's process group; the dispatcher ends us by
    # closing the socket (EOF) or with SIGKILL.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=3)
    try:
        os.close(4)  # the same socket: one descriptor is enough
    except OSError:
        pass
    try:
        _preload(kind, target)
    except Exception:
        sys.stderr.write("CRITICAL preloading %s failed:\n%s" % (target, traceback.format_exc()))
        sys.stderr.flush()
        from .runner import SETUP_FAILED
        return SETUP_FAILED
    # Everything imported so far stays put: the collector never touches (and so never
    # writes to, un-sharing them) the objects every worker inherits.
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": True, "pid": os.getpid()})
    buf = bytearray()
    while True:
        try:
            req, fds = _recv_request(sock, buf)
        except (OSError, ValueError) as err:
            sys.stderr.write("fork-server: bad request: %s\n" % err)
            return 1
        if req is None:
            return 0  # the dispatcher closed the socket: stop
        try:
            if len(fds) != 4:
                raise OSError("expected 4 descriptors, got %d" % len(fds))
            answer = {"pid": _fork_worker(argv, req, fds)}
        except (OSError, ValueError, KeyError, TypeError) as err:
            answer = {"error": str(err)}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            _send(sock, answer)
        except OSError:
            return 0
