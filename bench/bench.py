#!/usr/bin/env python3
"""rustworkers benchmark harness: the same apps under rustworkers and its peers, side by side.

    python3 bench/bench.py                                  # every suite, defaults
    python3 bench/bench.py --suite python asgi --duration 10 --rounds 5 --conns 64

Suites (docs/benchmarks.md has what each measures and the latest results):

    python   hello-JSON (and a 1 KiB POST echo) on granian WSGI, uvicorn ASGI, gunicorn sync,
             rustworkers `python =`, `wsgi =` and `asgi =` pools, uhttp-workers 1.8.1
    asgi     hello-JSON from a plain ASGI app and from FastAPI: rustworkers `asgi =`,
             uvicorn, granian --interface asgi
    ws       WebSocket echo round trips per second: rustworkers `asgi =`, uvicorn, granian
    front    /health, a 2 KiB and a 1 MiB static file: rustworkers dispatcher (1 and 2 event
             loops) vs nginx (1 and 2 workers)
    loops    a `python =` pool behind 1 and 2 event loops, keep-alive and a connection per request
    respawn  SIGKILL a worker, time until a new pid answers (median of 10); idle PSS

It installs what is missing by package name (apt: wrk, nginx-light; a venv at bench/.venv
with bench/requirements.txt), builds `cargo build --release` unless RW_BIN names a binary,
starts every server of a suite once on a fresh 127.0.0.1 port (2 worker processes each),
waits until it answers, checks every target's answer, warms each target with a 1 s run,
then measures in interleaved rounds (round 1: every target once, round 2: again, ...) and
reports medians. One markdown table per suite is printed and written to
bench/results/<suite>.md (server logs: bench/results/logs/<suite>/). Every process it
starts is stopped, with its descendants, by pid, on exit, error or Ctrl-C.

Environment: RW_BIN (a built rustworkers binary: no build), BENCH_VENV (another venv
holding the pinned packages: used as is when its versions match).

Stdlib only; the servers run from the venv, the load comes from wrk and bench/tools/wsload.py.
"""

import argparse
import ctypes
import datetime
import http.client
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, "apps")
TOOLS = os.path.join(HERE, "tools")
RESULTS = os.path.join(HERE, "results")
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
SUITES = ["python", "asgi", "ws", "front", "loops", "respawn"]
CLK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 60.0  # seconds a server gets to answer its ready URL
ECHO_BODY = (b"0123456789abcdef" * 64)  # 1 KiB, the POST /api/echo body
HELLO = {"hello": "world"}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- /proc

def read_stat(pid):
    """(ppid, state, self ticks, reaped children ticks, starttime) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(b")") + 2:].split()
    return (int(f[1]), f[0].decode(), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19]))


def proc_table():
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st is not None:
                table[int(d)] = st
    return table


def descendants(root, table):
    """root and every descendant, by ppid links (rustworkers workers setsid: sessions and
    process groups do not find them, parent links do)."""
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    for _ in range(100000):
        if not todo:
            break
        p = todo.pop()
        if p in table:
            out.append(p)
            todo.extend(kids.get(p, ()))
    return out


def tree_cpu(root):
    """(root's own CPU ticks, the whole tree's ticks incl. reaped children, pids)."""
    table = proc_table()
    pids = descendants(root, table)
    own = table[root][2] if root in table else 0
    total = sum(table[p][2] + table[p][3] for p in pids)
    return own, total, pids


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_mib(root):
    return sum(pss_kib(p) for p in descendants(root, proc_table())) / 1024.0


def sys_busy_ticks():
    """user+nice+system, softirq and steal ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], v[6], v[7]


def set_subreaper():
    """Orphaned descendants (a worker whose parent died) are re-parented to us, so they can
    still be found and stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- processes

class Procs:
    """Every process started here; stop() by pid with its descendants."""

    def __init__(self):
        self.roots = {}  # pid -> (Popen, starttime, name)

    def spawn(self, name, argv, log_path, cwd=None, env=None):
        logf = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            logf.close()
        st = read_stat(p.pid)
        self.roots[p.pid] = (p, st[4] if st else None, name)
        return p

    @staticmethod
    def _alive(pid, start):
        st = read_stat(pid)
        if st is None or (start is not None and st[4] != start):
            return False
        if st[1] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)  # ours (child or re-parented orphan)
            except ChildProcessError:
                pass
            return False
        return True

    @staticmethod
    def _signal(pid, start, sig):
        st = read_stat(pid)
        if st is not None and (start is None or st[4] == start):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, pid, grace=8.0):
        entry = self.roots.pop(pid, None)
        if entry is None:
            return
        popen, start, _ = entry
        table = proc_table()
        members = [(p, table[p][4]) for p in descendants(pid, table)] if self._alive(pid, start) else []
        if not members:
            popen.poll()
            return
        self._signal(pid, start, signal.SIGTERM)
        deadline = time.monotonic() + grace
        termed_all = False
        for _ in range(10000):
            popen.poll()
            alive = [(p, s) for p, s in members if self._alive(p, s)]
            if not alive or time.monotonic() > deadline:
                break
            if not termed_all and time.monotonic() > deadline - grace / 2:
                for p, s in alive:
                    self._signal(p, s, signal.SIGTERM)
                termed_all = True
            time.sleep(0.05)
        for p, s in members:
            if self._alive(p, s):
                self._signal(p, s, signal.SIGKILL)
        for _ in range(100):
            popen.poll()
            if not any(self._alive(p, s) for p, s in members):
                break
            time.sleep(0.02)

    def stop_all(self):
        for pid in list(self.roots):
            try:
                self.stop(pid, grace=5.0)
            except Exception as e:  # keep stopping the others
                log(f"stopping {pid}: {e}")
        # Anything left below us (re-parented orphans): SIGKILL, by pid.
        me = os.getpid()
        table = proc_table()
        for p in descendants(me, table):
            if p != me:
                self._signal(p, table[p][4], signal.SIGKILL)
        for _ in range(1000):
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break


PROCS = Procs()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(port, path, method="GET", body=None, headers=None, timeout=3.0):
    """(status, headers dict, body); (0, {}, b"") on a connection error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        conn.close()


def run_quiet(argv, timeout=60, **kw):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kw)
        return r.returncode, r.stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


# --------------------------------------------------------------------------- setup

def ensure_system_tools():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if shutil.which("wrk") and nginx:
        return nginx
    log("installing wrk and nginx-light (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    rc, out = run_quiet(sudo + ["apt-get", "install", "-y", "wrk", "nginx-light"], timeout=600, env=env)
    if rc != 0:
        run_quiet(sudo + ["apt-get", "update"], timeout=600, env=env)
        rc, out = run_quiet(sudo + ["apt-get", "install", "-y", "wrk", "nginx-light"], timeout=600, env=env)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if rc != 0 or not shutil.which("wrk") or not nginx:
        raise BenchError(f"apt-get install wrk nginx-light failed:\n{out[-2000:]}")
    return nginx


_CHECK_PINS = r"""
import importlib.metadata as m, re, sys
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, ver = line.partition("==")
    name = re.sub(r"\[.*\]", "", name).strip()
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = None
    if have != ver.strip():
        bad.append(f"{name}: want {ver.strip()}, have {have}")
for extra in ("httptools",):  # uvicorn[standard]'s HTTP parser
    try:
        m.version(extra)
    except m.PackageNotFoundError:
        bad.append(f"{extra}: missing")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"""


def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    # A venv whose creation was interrupted has a python but no pip: made again.
    if not os.access(py, os.X_OK) or run_quiet([py, "-m", "pip", "--version"])[0] != 0:
        log(f"creating the venv {venv}")
        rc, out = run_quiet([sys.executable, "-m", "venv", "--clear", venv], timeout=300)
        if rc != 0:
            raise BenchError(f"python3 -m venv {venv} failed:\n{out}")
    rc, out = run_quiet([py, "-c", _CHECK_PINS, REQUIREMENTS])
    if rc != 0:
        log(f"installing bench/requirements.txt into {venv} ({out.replace(chr(10), '; ')})")
        rc, out = run_quiet([py, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], timeout=1800)
        if rc != 0:
            raise BenchError(f"pip install -r {REQUIREMENTS} failed:\n{out[-3000:]}")
        rc, out = run_quiet([py, "-c", _CHECK_PINS, REQUIREMENTS])
        if rc != 0:
            raise BenchError(f"venv {venv} still does not match the pins:\n{out}")
    return py


def ensure_rustworkers(rw_bin):
    if rw_bin:
        if not os.access(rw_bin, os.X_OK):
            raise BenchError(f"RW_BIN={rw_bin} is not an executable")
        return os.path.abspath(rw_bin)
    log("cargo build --release")
    r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    if r.returncode != 0:
        raise BenchError("cargo build --release failed")
    return os.path.join(ROOT, "target", "release", "rustworkers")


def git_rev(path):
    d = path if os.path.isdir(path) else os.path.dirname(path)
    rc, top = run_quiet(["git", "-C", d, "rev-parse", "--show-toplevel"])
    if rc != 0:
        return None, None
    code = ["--", "src", "workers", "Cargo.toml", "Cargo.lock"]
    _, rev = run_quiet(["git", "-C", top, "rev-parse", "--short", "HEAD"])
    _, last = run_quiet(["git", "-C", top, "log", "-1", "--format=%h"] + code)
    _, dirty = run_quiet(["git", "-C", top, "status", "--porcelain"] + code)
    desc = rev + (f" (src/ and workers/ as of {last})" if last and last != rev else "")
    return top, desc + (" + uncommitted changes in src/ or workers/" if dirty else "")


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024} MiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    u = platform.uname()
    return f"{os.cpu_count()} CPUs ({model}), {mem}, {u.system} {u.release} {u.machine}"


def versions(py, rw, nginx):
    code = ("import importlib.metadata as m, sys, json\nout = {'python': sys.version.split()[0]}\n"
            "for n in ('gunicorn','uvicorn','granian','uhttp-workers','uhttp-server','fastapi','starlette',"
            "'pydantic','uvloop','httptools','websockets'):\n"
            "    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: out[n] = None\n"
            "print(json.dumps(out))")
    _, out = run_quiet([py, "-c", code])
    try:
        v = json.loads(out)
    except ValueError:
        v = {}
    _, rwv = run_quiet([rw, "--version"])
    top, rev = git_rev(rw)
    v["rustworkers"] = f"{rwv.split()[-1] if rwv else '?'} at {rev or 'unknown rev'} ({rw})"
    _, nv = run_quiet([nginx, "-v"])
    v["nginx"] = nv.split("/", 1)[-1] if nv else "?"
    _, wv = run_quiet(["wrk", "-v"])
    v["wrk"] = wv.split()[1] if wv.startswith("wrk") else "?"
    return v


# --------------------------------------------------------------------------- load

def to_ms(s):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if s.endswith(unit):
            try:
                return float(s[: -len(unit)]) * f
            except ValueError:
                pass
    return float("nan")


def parse_wrk(out):
    r = {"requests": 0, "seconds": 0.0, "rps": 0.0, "p50": float("nan"), "p99": float("nan"), "non2xx": 0, "sockerr": 0}
    for line in out.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "50%":
            r["p50"] = to_ms(w[1])
        elif w[0] == "99%":
            r["p99"] = to_ms(w[1])
        elif len(w) > 3 and w[1] == "requests" and w[2] == "in":
            r["requests"] = int(w[0])
            r["seconds"] = to_ms(w[3].rstrip(",")) / 1000.0
        elif w[0] == "Requests/sec:":
            r["rps"] = float(w[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["non2xx"] = int(w[-1])
        elif w[0] == "Socket" and w[1] == "errors:":
            r["sockerr"] = sum(int(x.strip(",")) for x in w[3::2])
            r["sockerr_detail"] = line.strip()
    return r


class Load:
    def __init__(self, args, tmp, venv_py):
        self.args = args
        self.venv_py = venv_py
        self.post_lua = os.path.join(tmp, "post1k.lua")
        with open(self.post_lua, "w") as f:
            f.write('wrk.method = "POST"\n'
                    f'wrk.body = string.rep("0123456789abcdef", {len(ECHO_BODY) // 16})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')

    def wrk_argv(self, target, port, duration):
        a = ["wrk", f"-t{self.args.threads}", f"-c{self.args.conns}", f"-d{duration:g}s", "--latency"]
        if target.method == "POST":
            a += ["-s", self.post_lua]
        if target.close:
            a += ["-H", "Connection: close"]
        return a + [f"http://127.0.0.1:{port}{target.path}"]

    def ws_argv(self, target, port, duration):
        return [sys.executable, os.path.join(TOOLS, "wsload.py"), f"ws://127.0.0.1:{port}{target.path}",
                "--conns", str(self.args.conns), "--procs", str(self.args.ws_procs),
                "--duration", f"{duration:g}", "--size", str(self.args.ws_size)]

    def run(self, target, port, duration):
        """One load run: dict with rps, requests, p50, p99, errors, client_cpu_s."""
        argv = (self.ws_argv if target.kind == "ws" else self.wrk_argv)(target, port, duration)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=duration + 60)
        except BaseException:
            p.kill()
            p.wait()
            raise
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = out.decode(errors="replace")
        client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        if target.kind == "ws":
            try:
                j = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                j = {"error": out[-500:]}
            if "error" in j:
                raise BenchError(f"wsload: {j['error']}")
            return {"rps": j["msg_per_s"], "requests": j["messages"], "p50": j["p50_ms"], "p99": j["p99_ms"],
                    "errors": j["errors"], "client_cpu_s": j["client_cpu_s"], "raw": out}
        r = parse_wrk(out)
        if r["requests"] == 0 and r["rps"] == 0:
            raise BenchError(f"wrk failed: {out[-500:]}")
        r["errors"] = r["non2xx"] + r["sockerr"]
        # Only 2xx/3xx answers count as served: wrk's own req/s includes error answers.
        r["wrk_rps"] = r["rps"]
        r["requests"] = max(0, r["requests"] - r["non2xx"])
        r["rps"] = r["requests"] / r["seconds"] if r["seconds"] > 0 else 0.0
        r["client_cpu_s"] = client_cpu
        r["raw"] = out
        return r


# --------------------------------------------------------------------------- servers

class Server:
    """A server started once per suite. build(port) -> (argv, cwd, env, description)."""

    def __init__(self, name, build, ready_path, split=False):
        self.name, self.build, self.ready_path, self.split = name, build, ready_path, split
        self.port = self.proc = None
        self.failed = None
        self.describe = ""

    def start(self, logdir):
        self.port = free_port()
        argv, cwd, env, self.describe = self.build(self.port)
        self.log = os.path.join(logdir, f"{self.name}.log")
        open(self.log, "wb").close()
        self.proc = PROCS.spawn(self.name, argv, self.log, cwd=cwd, env=env)

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            status, _, _ = http_request(self.port, self.ready_path, timeout=1.0)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no 200 from {self.ready_path} in {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n=8):
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            PROCS.stop(self.proc.pid)


class Target:
    def __init__(self, label, server, path, group, method="GET", check=None, ref=False, kind="http", vs=None,
                 close=False):
        self.label, self.server, self.path, self.group = label, server, path, group
        self.method, self.check, self.ref, self.kind = method, check, ref, kind
        self.vs = vs  # another Target: the ratio is against it instead of the group's reference
        self.close = close  # a new connection per request (wrk -H "Connection: close")
        self.failed = None
        self.runs = []


def check_json(expected):
    """A check: 200 with exactly this JSON value."""
    def check(status, headers, body):
        if status != 200:
            return f"status {status}"
        try:
            if json.loads(body) != expected:
                return f"body {body[:60]!r}"
        except ValueError:
            return f"not JSON: {body[:60]!r}"
        return None
    return check


check_hello = check_json(HELLO)
check_item = check_json({"id": 42, "name": "item 42"})


def check_echo(status, headers, body):
    if status != 200:
        return f"status {status}"
    return None if body == ECHO_BODY else f"echo of {len(body)} bytes, not the {len(ECHO_BODY)} sent"


def check_status(status, headers, body):
    return None if status == 200 else f"status {status}"


def check_file(expected):
    def check(status, headers, body):
        if status != 200:
            return f"status {status}"
        return None if body == expected else f"{len(body)} bytes, not the {len(expected)}-byte file"
    return check


class Ctx:
    def __init__(self, args, tmp, py, rw, nginx):
        self.args, self.tmp, self.py, self.rw, self.nginx = args, tmp, py, rw, nginx
        self.venv_bin = os.path.dirname(py)

    def env(self, **extra):
        e = dict(os.environ)
        e.pop("PYTHONPATH", None)
        e["PYTHONPATH"] = APPS
        e.update(extra)
        return e

    # -- rustworkers: one instance per target, so its process tree is that target's alone
    def rw_server(self, name, pool, routes='["/api/**"]', extra="", workers=2, static="", ready=None, threads=None):
        def build(port):
            cfg = os.path.join(self.tmp, f"{name}.toml")
            pool_block = ""
            if pool:
                pool_block = (f'[[pool]]\nname = "app"\nroutes = {routes}\n{pool}\n'
                              f'num_workers = {workers}\n{extra}')
                if "native" not in pool:
                    pool_block += f'interpreter = "{self.py}"\nmodule_path = ["{APPS}"]\n'
            with open(cfg, "w") as f:
                threads_line = f"threads = {threads}\n" if threads else ""
                f.write(f'[server]\nbind = ["127.0.0.1:{port}"]\naccess_log = "off"\n{threads_line}\n{static}'
                        '[[sync]]\npath = "/health"\nkind = "health"\n\n'
                        '[[sync]]\npath = "/status"\nkind = "status"\n\n' + pool_block)
            desc = f"`RUST_LOG=warn rustworkers -c {name}.toml`" + (f", `threads = {threads}`" if threads else "")
            if pool:
                desc += f": `{pool}`, `num_workers = {workers}`" + "".join(
                    f", `{ln.strip()}`" for ln in extra.splitlines() if ln.strip())
            else:
                desc += ": no pool (the dispatcher alone)"
            return [self.rw, "-c", cfg], None, self.env(RUST_LOG="warn"), desc
        if ready is None:
            ready = "/health" if not pool else ("/echo/x" if "native" in pool else "/api/hello")
        return Server(name, build, ready, split=True)

    def _cmd(self, name, argv, ready="/api/hello", cwd=None):
        def build(port):
            a = [x.replace("{port}", str(port)) for x in argv]
            shown = " ".join(shlex.quote(os.path.basename(x) if x.startswith(self.venv_bin) else
                                         x.replace("{port}", "PORT").replace(ROOT + os.sep, "")) for x in argv)
            return a, cwd, self.env(), f"`{shown}`"
        return Server(name, build, ready)

    def granian(self, name, interface, app, ready="/api/hello"):
        return self._cmd(name, [os.path.join(self.venv_bin, "granian"), "--interface", interface, "--workers", "2",
                                *(["--loop", "uvloop"] if interface == "asgi" else []),
                                "--host", "127.0.0.1", "--port", "{port}", "--working-dir", APPS,
                                "--log-level", "warning", "--no-access-log", app], ready)

    def uvicorn(self, name, app, ready="/api/hello"):
        return self._cmd(name, [os.path.join(self.venv_bin, "uvicorn"), app, "--host", "127.0.0.1", "--port", "{port}",
                                "--workers", "2", "--loop", "uvloop", "--http", "httptools", "--app-dir", APPS,
                                "--log-level", "warning", "--no-access-log"], ready)

    def gunicorn(self, name, workers=2, ready="/api/hello"):
        return self._cmd(name, [os.path.join(self.venv_bin, "gunicorn"), "-w", str(workers), "-k", "sync",
                                "-b", "127.0.0.1:{port}", "--chdir", APPS, "--log-level", "warning",
                                "wsgi_hello:app"], ready)

    def uhttp(self, name, workers=2, max_restarts=10, ready="/api/hello"):
        # max_waiting_clients 1024: uhttp-server's default (32) would answer 408 to the oldest
        # connection whenever a 33rd arrives, which 64 wrk connections do all the time.
        return self._cmd(name, [self.py, os.path.join(APPS, "uhttp_hello.py"), "{port}", str(workers),
                                str(max_restarts), "1024"], ready, cwd=APPS)

    def nginx_server(self, name, root, workers=2):
        def build(port):
            d = os.path.join(self.tmp, name)
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /health {{ default_type application/json; return 200 '{{"pools":{{}},"status":"ok"}}'; }}
        location /static/ {{ root {root}; }}
    }}
}}
""")
            desc = (f"`nginx -c nginx.conf`: `worker_processes {workers}`, `sendfile on`, `tcp_nopush on`, `access_log off`, "
                    "`location = /health { return 200 '{\"pools\":{},\"status\":\"ok\"}'; }`, `location /static/ { root ...; }`")
            return [self.nginx, "-p", d, "-e", f"{d}/error.log", "-c", conf], None, self.env(), desc
        return Server(name, build, "/health")


# --------------------------------------------------------------------------- suites

def suite_python(ctx):
    s = {
        "granian": ctx.granian("granian-wsgi", "wsgi", "wsgi_hello:app"),
        "uvicorn": ctx.uvicorn("uvicorn-asgi", "asgi_hello:app"),
        "gunicorn": ctx.gunicorn("gunicorn-sync"),
        "rw_py": ctx.rw_server("rw-python", 'python = "hello_worker:HelloWorker"'),
        "rw_py_1": ctx.rw_server("rw-python-1loop", 'python = "hello_worker:HelloWorker"', threads=1),
        "rw_py_pre": ctx.rw_server("rw-python-preload", 'python = "hello_worker:HelloWorker"',
                                   extra="preload = true\n"),
        "rw_wsgi": ctx.rw_server("rw-wsgi", 'wsgi = "wsgi_hello:app"'),
        "rw_asgi": ctx.rw_server("rw-asgi", 'asgi = "asgi_hello:app"', extra='loop = "uvloop"\n'),
        "uhttp": ctx.uhttp("uhttp-workers"),
    }
    t = [
        Target("granian WSGI", s["granian"], "/api/hello", "GET /api/hello", check=check_hello, ref=True),
        Target("uvicorn ASGI (plain app)", s["uvicorn"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("gunicorn sync", s["gunicorn"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("rustworkers `python =`", s["rw_py"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("rustworkers `python =`, `preload`", s["rw_py_pre"], "/api/hello", "GET /api/hello",
               check=check_hello),
        Target("rustworkers `python =`, 1 loop", s["rw_py_1"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("rustworkers `wsgi =`", s["rw_wsgi"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("rustworkers `asgi =` (plain app)", s["rw_asgi"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("uhttp-workers 1.8.1", s["uhttp"], "/api/hello", "GET /api/hello", check=check_hello),
        Target("granian WSGI", s["granian"], "/api/items/42", "GET /api/items/42", check=check_item, ref=True),
        Target("rustworkers `python =`", s["rw_py"], "/api/items/42", "GET /api/items/42", check=check_item),
        Target("rustworkers `wsgi =`", s["rw_wsgi"], "/api/items/42", "GET /api/items/42", check=check_item),
        Target("granian WSGI", s["granian"], "/api/echo", "POST /api/echo (1 KiB)", method="POST",
               check=check_echo, ref=True),
        Target("rustworkers `python =`", s["rw_py"], "/api/echo", "POST /api/echo (1 KiB)", method="POST",
               check=check_echo),
        Target("rustworkers `wsgi =`", s["rw_wsgi"], "/api/echo", "POST /api/echo (1 KiB)", method="POST",
               check=check_echo),
    ]
    notes = [
        "gunicorn's sync worker closes the connection after every response (no keep-alive): wrk reconnects "
        "for each request there.",
        "uhttp-workers runs with uhttp-server's `max_waiting_clients = 1024` (4th argument of "
        "`uhttp_hello.py`): with the default, 32, each connection past 32 makes it answer the oldest one 408 "
        "`Request Timeout, too many requests`, and with 64 wrk connections (reconnecting every 100 requests, "
        "its keep-alive cap) most answers (76-85%) were 408s. Its other defaults are kept.",
    ]
    return list(s.values()), t, "Python apps: hello-JSON, an item by path parameter and a 1 KiB POST echo (reference: granian WSGI)", notes


def suite_asgi(ctx):
    s = {
        "rw_plain": ctx.rw_server("rw-asgi-plain", 'asgi = "asgi_hello:app"', extra='loop = "uvloop"\n'),
        "uv_plain": ctx.uvicorn("uvicorn-plain", "asgi_hello:app"),
        "gr_plain": ctx.granian("granian-asgi-plain", "asgi", "asgi_hello:app"),
        "rw_fast": ctx.rw_server("rw-asgi-fastapi", 'asgi = "fastapi_hello:app"', extra='loop = "uvloop"\n'),
        "uv_fast": ctx.uvicorn("uvicorn-fastapi", "fastapi_hello:app"),
        "gr_fast": ctx.granian("granian-asgi-fastapi", "asgi", "fastapi_hello:app"),
    }
    g1, g2 = "plain ASGI app", "FastAPI app"
    t = [
        Target("uvicorn", s["uv_plain"], "/api/hello", g1, check=check_hello, ref=True),
        Target("rustworkers `asgi =`", s["rw_plain"], "/api/hello", g1, check=check_hello),
        Target("granian ASGI", s["gr_plain"], "/api/hello", g1, check=check_hello),
        Target("uvicorn", s["uv_fast"], "/api/hello", g2, check=check_hello, ref=True),
        Target("rustworkers `asgi =`", s["rw_fast"], "/api/hello", g2, check=check_hello),
        Target("granian ASGI", s["gr_fast"], "/api/hello", g2, check=check_hello),
    ]
    notes = ["FastAPI routes are `async def` (no thread pool); the plain app is `bench/apps/asgi_hello.py`."]
    return (list(s.values()), t, "ASGI: GET /api/hello from a plain ASGI app and from FastAPI (reference: uvicorn)",
            notes)


def suite_ws(ctx):
    routes = '["/api/**", "/ws"]'
    s = {
        "uv": ctx.uvicorn("uvicorn-ws", "asgi_hello:app"),
        "rw": ctx.rw_server("rw-asgi-ws", 'asgi = "asgi_hello:app"', routes=routes, extra='loop = "uvloop"\n'),
        "gr": ctx.granian("granian-asgi-ws", "asgi", "asgi_hello:app"),
    }
    g = f"WebSocket echo, {ctx.args.ws_size}-byte text messages"
    t = [
        Target("uvicorn", s["uv"], "/ws", g, ref=True, kind="ws"),
        Target("rustworkers `asgi =`", s["rw"], "/ws", g, kind="ws"),
        Target("granian ASGI", s["gr"], "/ws", g, kind="ws"),
    ]
    notes = ["The app is `bench/apps/asgi_hello.py` (plain ASGI, `/ws` echoes each message) for every server. "
             "uvicorn's `--ws auto` takes `websockets-sansio` when `websockets` is installed; granian runs its own "
             "(Rust) WebSocket protocol."]
    return list(s.values()), t, "WebSocket echo round trips (reference: uvicorn)", notes


def suite_front(ctx):
    root = os.path.join(ctx.tmp, "www")
    static = os.path.join(root, "static")
    os.makedirs(static, exist_ok=True)
    small = (b"0123456789abcdef" * 128)  # 2 KiB
    big = bytes(range(256)) * 4096  # 1 MiB
    for fname, data in (("f2k.txt", small), ("f1m.bin", big)):
        with open(os.path.join(static, fname), "wb") as f:
            f.write(data)
    for d in (ctx.tmp, root, static):  # nginx workers run as nobody
        os.chmod(d, 0o755)
    for fname in ("f2k.txt", "f1m.bin"):
        os.chmod(os.path.join(static, fname), 0o644)
    mount = f'[[static]]\nprefix = "/static/"\npath = "{static}"\nauthoritative = true\n\n'
    s = {
        "nginx": ctx.nginx_server("nginx", root),
        "nginx1": ctx.nginx_server("nginx-1", root, workers=1),
        "rw": ctx.rw_server("rw-front", None, static=mount, threads=2),
        "rw1": ctx.rw_server("rw-front-1", None, static=mount, threads=1),
        "echo": ctx.rw_server("rw-echo", 'native = "echo"', routes='["/echo/**"]'),
    }
    rw_health = Target("rustworkers, 2 loops", s["rw"], "/health", "/health", check=check_status)
    t = [
        Target("nginx, 2 workers", s["nginx"], "/health", "/health", check=check_status, ref=True),
        rw_health,
        Target("nginx, 1 worker", s["nginx1"], "/health", "/health", check=check_status),
        Target("rustworkers, 1 loop", s["rw1"], "/health", "/health", check=check_status),
        Target("rustworkers native `echo` pool (1 loop)", s["echo"], "/echo/x", "/echo/x (to a worker and back)",
               check=check_status, vs=rw_health),
        Target("nginx, 2 workers", s["nginx"], "/static/f2k.txt", "static 2 KiB", check=check_file(small), ref=True),
        Target("rustworkers, 2 loops", s["rw"], "/static/f2k.txt", "static 2 KiB", check=check_file(small)),
        Target("nginx, 1 worker", s["nginx1"], "/static/f2k.txt", "static 2 KiB", check=check_file(small)),
        Target("rustworkers, 1 loop", s["rw1"], "/static/f2k.txt", "static 2 KiB", check=check_file(small)),
        Target("nginx, 2 workers", s["nginx"], "/static/f1m.bin", "static 1 MiB", check=check_file(big), ref=True),
        Target("rustworkers, 2 loops", s["rw"], "/static/f1m.bin", "static 1 MiB", check=check_file(big)),
    ]
    notes = ["rustworkers answers `/health` and static files in its dispatcher (no pool), with `threads = 2` (two "
             "event loops, as `auto` gives on 2 cores without pools) and `threads = 1`; nginx with `worker_processes` 2 and 1. All "
             "answer `/health` with the same 26-byte JSON body. The native `echo` pool (2 workers, a separate "
             "instance, one loop as native pools require) shows what the pipe round trip to a worker costs against "
             "`/health` answered in the dispatcher. wrk itself needs most of one of the 2 cores."]
    return (list(s.values()), t, "Front: /health and static files, rustworkers dispatcher vs nginx (reference: nginx)",
            notes)


def suite_loops(ctx):
    hello = 'python = "hello_worker:HelloWorker"'
    s = {
        "one": ctx.rw_server("rw-python-loops-1", hello, threads=1),
        "two": ctx.rw_server("rw-python-loops-2", hello, threads=2),
    }
    g_keep, g_close = "GET /api/hello, keep-alive", "GET /api/hello, a connection per request"
    t = [
        Target("rustworkers, 1 loop", s["one"], "/api/hello", g_keep, check=check_hello, ref=True),
        Target("rustworkers, 2 loops", s["two"], "/api/hello", g_keep, check=check_hello),
        Target("rustworkers, 1 loop", s["one"], "/api/hello", g_close, check=check_hello, ref=True, close=True),
        Target("rustworkers, 2 loops", s["two"], "/api/hello", g_close, check=check_hello, close=True),
    ]
    notes = ["The same `python =` pool behind 1 and 2 event loops: a front loop hands each connection with a "
             "pool request to the main loop once; with a connection per request (`wrk -H 'Connection: close'`, "
             "like a proxy speaking HTTP/1.0 to its upstream) every request pays that handover."]
    return list(s.values()), t, "Event loops and pool traffic: 1 loop vs 2 (reference: 1 loop)", notes


# --------------------------------------------------------------------------- measuring

def measure(load, target, duration):
    srv = target.server
    root = srv.proc.pid
    own0, tot0, _ = tree_cpu(root)
    busy0, soft0, steal0 = sys_busy_ticks()
    me0 = os.times()
    w0 = time.monotonic()
    r = load.run(target, srv.port, duration)
    wall = time.monotonic() - w0
    own1, tot1, pids = tree_cpu(root)
    busy1, soft1, steal1 = sys_busy_ticks()
    me1 = os.times()
    r["pss_mib"] = sum(pss_kib(p) for p in pids) / 1024.0
    r["procs"] = len(pids)
    cpu = (tot1 - tot0) / CLK
    r["cpu_s"] = cpu
    r["cpu_disp_s"] = (own1 - own0) / CLK
    n = max(1, r["requests"])
    r["cpu_us"] = cpu * 1e6 / n
    r["cpu_disp_us"] = r["cpu_disp_s"] * 1e6 / n
    r["cpu_work_us"] = r["cpu_us"] - r["cpu_disp_us"]
    mine = (me1.user - me0.user) + (me1.system - me0.system)
    other = (busy1 - busy0) / CLK - cpu - r["client_cpu_s"] - mine
    r["other_pct"] = max(0.0, other) * 100.0 / wall
    r["softirq_pct"] = (soft1 - soft0) / CLK * 100.0 / wall
    r["steal_pct"] = (steal1 - steal0) / CLK * 100.0 / wall
    r["client_pct"] = r["client_cpu_s"] * 100.0 / duration
    r["server_pct"] = cpu * 100.0 / duration
    return r


def med(vals):
    vals = [v for v in vals if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def fmt_num(v, nd=0):
    if v != v:
        return "n/a"
    return f"{v:,.{nd}f}".replace(",", " ") if nd == 0 else f"{v:.{nd}f}"


def run_suite(name, ctx, load, header):
    builders = {"python": suite_python, "asgi": suite_asgi, "ws": suite_ws, "front": suite_front,
                "loops": suite_loops}
    servers, targets, title, suite_notes = builders[name](ctx)
    args = ctx.args
    logdir = os.path.join(RESULTS, "logs", name)
    os.makedirs(logdir, exist_ok=True)
    loadavg0 = open("/proc/loadavg").read().split()[:3]
    t_start = time.monotonic()
    try:
        for s in servers:
            try:
                s.start(logdir)
            except OSError as e:
                s.failed = f"did not start: {e}"
        for s in servers:
            if s.failed:
                continue
            try:
                s.wait_ready()
            except BenchError as e:
                s.failed = str(e)
                log(f"{name}: {s.name} failed: {e}")
                s.stop()
        for t in targets:
            if t.server.failed:
                t.failed = t.server.failed
                continue
            if t.kind == "http":
                body = ECHO_BODY if t.method == "POST" else None
                hdrs = {"Content-Type": "application/octet-stream"} if body else {}
                st, h, b = http_request(t.server.port, t.path, t.method, body, hdrs, timeout=10)
                err = t.check(st, h, b) if t.check else None
                if err:
                    t.failed = f"wrong answer: {err}"
                    log(f"{name}: {t.label} {t.path}: {t.failed}")
                    continue
            try:  # warm-up, 1 s (a WebSocket target's first real check: wsload validates every echo)
                r = load.run(t, t.server.port, 1)
                if t.kind == "ws" and (r["requests"] == 0 or r["errors"]):
                    t.failed = f"echo failed in the warm-up: {r['requests']} round trips, {r['errors']} errors"
            except BenchError as e:
                t.failed = f"warm-up failed: {e}"
            if t.failed:
                log(f"{name}: {t.label}: {t.failed}")
        live = [t for t in targets if not t.failed]
        for rnd in range(1, args.rounds + 1):
            for t in live:
                if t.failed:
                    continue
                if t.server.proc.poll() is not None:
                    t.failed = f"server exited during the runs: {t.server.log_tail()}"
                    continue
                try:
                    r = measure(load, t, args.duration)
                except BenchError as e:
                    t.failed = str(e)
                    log(f"{name}: {t.label}: {e}")
                    continue
                t.runs.append(r)
                unit = "msg/s" if t.kind == "ws" else "req/s"
                log(f"{name} {rnd}/{args.rounds} {t.label:<34} {t.group:<26} {r['rps']:>9.0f} {unit}  p99 "
                    f"{r['p99']:6.2f} ms  err {r['errors']}  cpu {r['cpu_us']:.0f} µs  pss {r['pss_mib']:.1f} MiB"
                    f"  client {r['client_pct']:.0f}%  other {r['other_pct']:.0f}%")
    finally:
        for s in servers:
            s.stop()
    loadavg1 = open("/proc/loadavg").read().split()[:3]
    elapsed = time.monotonic() - t_start
    return render_suite(name, title, servers, targets, header, ctx, loadavg0, loadavg1, elapsed, suite_notes)


def render_suite(name, title, servers, targets, header, ctx, la0, la1, elapsed, suite_notes):
    args = ctx.args
    ws = name == "ws"
    unit = "msg/s" if ws else "req/s"
    per = "msg" if ws else "req"
    refs = {}
    for t in targets:
        if t.ref and t.runs:
            refs[t.group] = med([r["rps"] for r in t.runs])
    lines = [f"| target | {'test' if not ws else 'load'} | {unit} (median) | {unit} per round | × ref | p50 ms | "
             f"p99 ms | errors | server CPU µs/{per} | PSS MiB | client CPU % |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = list(suite_notes)
    disturbed = []
    for t in targets:
        if t.failed or not t.runs:
            lines.append(f"| {t.label} | {t.group} | failed | | | | | | | | |")
            why = " | ".join(str(t.failed or "no run").split("\n"))
            notes.append(f"{t.label} ({t.group}): {why[:400]}")
            continue
        rps = med([r["rps"] for r in t.runs])
        per_round = " / ".join(fmt_num(r["rps"]) for r in t.runs)
        if t.vs is not None:
            ref = med([r["rps"] for r in t.vs.runs]) if t.vs.runs else None
            ratio = f"{rps / ref:.2f} (vs {t.vs.label} {t.vs.group})" if ref else "n/a"
        else:
            ref = refs.get(t.group)
            ratio = "**1.00**" if t.ref else (f"{rps / ref:.2f}" if ref else "n/a")
        cpu = med([r["cpu_us"] for r in t.runs])
        if t.server.split:
            cpu_s = (f"{cpu:.0f} = {med([r['cpu_disp_us'] for r in t.runs]):.0f} + "
                     f"{med([r['cpu_work_us'] for r in t.runs]):.0f}")
        else:
            cpu_s = f"{cpu:.0f}"
        errors = sum(r["errors"] for r in t.runs)
        client = med([r["client_pct"] for r in t.runs])
        lines.append(f"| {t.label} | {t.group} | {fmt_num(rps)} | {per_round} | {ratio} | "
                     f"{fmt_num(med([r['p50'] for r in t.runs]), 2)} | {fmt_num(med([r['p99'] for r in t.runs]), 2)} | "
                     f"{errors} | {cpu_s} | {med([r['pss_mib'] for r in t.runs]):.1f} | {client:.0f} |")
        if client >= 90:
            notes.append(f"{t.label} ({t.group}): the client used {client:.0f}% of a core: it may be the bottleneck")
        if errors:
            if ws:
                what = ""
            else:
                kinds = {}
                for r in t.runs:
                    kinds["non-2xx/3xx"] = kinds.get("non-2xx/3xx", 0) + r["non2xx"]
                    for k, n in zip(("connect", "read", "write", "timeout"),
                                    r.get("sockerr_detail", "").replace(",", "").split()[3::2]):
                        kinds[k] = kinds.get(k, 0) + int(n)
                what = " (" + ", ".join(f"{k} {n}" for k, n in kinds.items() if n) + ")"
            notes.append(f"{t.label} ({t.group}): {errors} errors over {len(t.runs)} rounds{what}")
        busy = [r["other_pct"] for r in t.runs]
        if busy and max(busy) >= 25:
            disturbed.append(f"{t.label} {t.group} ({' / '.join(f'{x:.0f}' for x in busy)}%)")
    if disturbed:
        notes.append("Other processes on the machine used ≥ 25% of a core during some runs (per round, % of a "
                     "core; those numbers are disturbed): " + "; ".join(disturbed))
    table = "\n".join(lines)
    others = [r["other_pct"] for t in targets for r in t.runs]
    softs = [r["softirq_pct"] for t in targets for r in t.runs]
    steals = [r["steal_pct"] for t in targets for r in t.runs]
    if ws:
        load_desc = (f"`python3 bench/tools/wsload.py ws://127.0.0.1:PORT/ws --conns {args.conns} --procs "
                     f"{args.ws_procs} --duration {args.duration:g} --size {args.ws_size}` (raw sockets, one "
                     f"message in flight per connection)")
    else:
        load_desc = (f"`wrk -t{args.threads} -c{args.conns} -d{args.duration:g}s --latency URL`"
                     + (" (POST: `-s post1k.lua`, a 1 KiB `application/octet-stream` body)" if name == "python" else ""))
    out = [f"# bench: `{name}` — {title}", ""] + header + [
        f"- load: {load_desc}; {args.rounds} interleaved rounds (every target once per round) after a 1 s "
        f"warm-up per target; every column is the median over rounds except errors (summed)",
        f"- load average before / after: {' '.join(la0)} / {' '.join(la1)}; suite wall time {elapsed:.0f} s",
        f"- CPU outside the servers, the client and the harness during the runs: median "
        f"{fmt_num(med(others))}%, max {fmt_num(max(others) if others else float('nan'))}% of one core "
        f"(softirq, i.e. loopback networking, apart: median {fmt_num(med(softs))}%; CPU stolen by the "
        f"hypervisor: median {fmt_num(med(steals))}%, max {fmt_num(max(steals) if steals else float('nan'))}%)",
        "", "Servers (each started once for the suite, idle while another is measured):", ""]
    seen = set()
    for s in servers:
        if s.name not in seen:
            seen.add(s.name)
            out.append(f"- {s.name}: {s.describe or '(not started)'}" + (f" — **failed**: {s.failed}" if s.failed else ""))
    out += ["", table, "",
            f"Columns: {unit} = completed {'round trips' if ws else 'requests answered 2xx/3xx'} per second; × ref = median "
            f"{unit} over the reference target's (the row with **1.00**) for the same {'load' if ws else 'test'}; "
            f"p50/p99 = {'round-trip' if ws else 'wrk'} latency; errors = "
            + ("failed handshakes, closed connections, wrong echoes" if ws else "non-2xx/3xx answers + socket errors")
            + f"; server CPU µs/{per} = utime+stime of the server's whole process tree (master and every "
            f"descendant, by /proc ppid links) over the run, divided by the {'round trips' if ws else '2xx/3xx answers'} "
            f"completed (rustworkers: total = dispatcher + workers); PSS MiB = Σ Pss of that tree "
            f"(/proc/PID/smaps_rollup) right after the run; client CPU % = {'wsload' if ws else 'wrk'}'s "
            f"CPU over the run, in % of one core.", ""]
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(out)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(text)
    return text


# --------------------------------------------------------------------------- respawn

def run_respawn(ctx, header):
    args = ctx.args
    logdir = os.path.join(RESULTS, "logs", "respawn")
    os.makedirs(logdir, exist_ok=True)
    extra = "max_restarts = 1000\n"
    specs = [
        ("rustworkers `python =`", ctx.rw_server("rw-python-pid", 'python = "hello_worker:HelloWorker"', workers=1,
                                                 extra=extra), "/api/pid", True),
        ("rustworkers `wsgi =`", ctx.rw_server("rw-wsgi-pid", 'wsgi = "wsgi_hello:app"', workers=1, extra=extra),
         "/api/pid", True),
        ("rustworkers `asgi =`", ctx.rw_server("rw-asgi-pid", 'asgi = "asgi_hello:app"', workers=1,
                                               extra=extra + 'loop = "uvloop"\n'), "/api/pid", True),
        ("rustworkers `python =`, `preload`", ctx.rw_server("rw-python-pid-pre", 'python = "hello_worker:HelloWorker"',
                                                          workers=1, extra=extra + "preload = true\n"),
         "/api/pid", True),
        ("rustworkers `wsgi =`, `preload`", ctx.rw_server("rw-wsgi-pid-pre", 'wsgi = "wsgi_hello:app"', workers=1,
                                                        extra=extra + "preload = true\n"), "/api/pid", True),
        ("rustworkers `asgi =`, `preload`", ctx.rw_server("rw-asgi-pid-pre", 'asgi = "asgi_hello:app"', workers=1,
                                                        extra=extra + 'loop = "uvloop"\npreload = true\n'),
         "/api/pid", True),
        ("rustworkers native `echo`", ctx.rw_server("rw-echo", 'native = "echo"', routes='["/echo/**"]', workers=1,
                                                    extra=extra), "/echo/x", True),
        ("gunicorn sync", ctx.gunicorn("gunicorn-1", workers=1, ready="/api/pid"), "/api/pid", False),
        ("uhttp-workers 1.8.1", ctx.uhttp("uhttp-1", workers=1, max_restarts=1000, ready="/api/pid"), "/api/pid",
         False),
    ]
    rows, notes, servers = [], [], []
    la0 = open("/proc/loadavg").read().split()[:3]
    for label, srv, path, is_rw in specs:
        servers.append(srv)
        try:
            srv.start(logdir)
            srv.wait_ready()
            for _ in range(20):  # a few requests: imports done, caches warm
                http_request(srv.port, path)
            time.sleep(1.0)
            st, _, body = http_request(srv.port, path)
            wpid = json.loads(body).get("pid") if st == 200 else None
            tree = descendants(srv.proc.pid, proc_table())
            worker_pss = pss_kib(wpid) / 1024.0 if wpid in tree else float("nan")
            tree_pss = sum(pss_kib(p) for p in tree) / 1024.0
            argv = [sys.executable, os.path.join(TOOLS, "respawn.py"), f"http://127.0.0.1:{srv.port}{path}",
                    "--runs", str(args.respawn_runs)]
            if is_rw:
                argv += ["--status", f"http://127.0.0.1:{srv.port}/status", "--pool", "app"]
            rc, out = run_quiet(argv, timeout=60 + 35 * args.respawn_runs)
            try:
                j = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                j = {"error": out[-300:]}
            if "error" in j:
                rows.append(f"| {label} | failed | | | | | {worker_pss:.1f} | {tree_pss:.1f} |")
                notes.append(f"{label}: {j['error']}")
            else:
                seen = ", ".join(f"{k}: {v}" for k, v in sorted(j["statuses_while_waiting"].items())) or "none"
                rows.append(f"| {label} | {j['median_ms']:.1f} | {j['min_ms']:.1f} | {j['max_ms']:.1f} | "
                            f"{' '.join(f'{x:.0f}' for x in j['runs_ms'])} | {seen} | {worker_pss:.1f} | {tree_pss:.1f} |")
            log(f"respawn {label}: {j.get('median_ms', j.get('error'))} ms; worker PSS {worker_pss:.1f} MiB")
        except BenchError as e:
            rows.append(f"| {label} | failed | | | | | | |")
            notes.append(f"{label}: {e}")
        finally:
            srv.stop()
    la1 = open("/proc/loadavg").read().split()[:3]
    table = "\n".join(["| server / worker | median ms | min ms | max ms | runs ms | non-200 while waiting | "
                       "idle worker PSS MiB | idle tree PSS MiB |", "|---|---:|---:|---:|---|---|---:|---:|"] + rows)
    out = ["# bench: `respawn` — SIGKILL a worker, time until a new pid answers 200", ""] + header + [
        f"- method: one server at a time, 1 worker (rustworkers and uhttp-workers with `max_restarts = 1000` so "
        f"{args.respawn_runs} kills in a row do not degrade the pool); `bench/tools/respawn.py` GETs the route "
        f"(the answer carries the worker's pid; rustworkers: also checked against /status), SIGKILLs that pid, "
        f"then GETs every 1 ms until a 200 comes from a new pid; {args.respawn_runs} runs",
        "- idle PSS: after 20 requests and 1 s idle, before the kills: the worker that answered, and the whole "
        "process tree (master/dispatcher + worker)",
        f"- load average before / after: {' '.join(la0)} / {' '.join(la1)}",
        "", "Servers:", ""] + [f"- {s.name}: {s.describe}" for s in servers] + ["", table, ""]
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(out)
    with open(os.path.join(RESULTS, "respawn.md"), "w") as f:
        f.write(text)
    return text


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", nargs="+", choices=SUITES, default=None, help="suites to run (default: all)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported (default 3)")
    ap.add_argument("--conns", type=int, default=64, help="connections (wrk -c, WebSockets) (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--ws-procs", type=int, default=1, help="WebSocket load processes (default 1)")
    ap.add_argument("--ws-size", type=int, default=64, help="WebSocket message bytes (default 64)")
    ap.add_argument("--respawn-runs", type=int, default=10, help="kills per respawn target (default 10)")
    args = ap.parse_args()
    suites = args.suite or SUITES
    suites = [s for s in SUITES if s in suites]  # the documented order
    if args.duration <= 0 or args.rounds < 1 or args.conns < 1 or args.threads < 1:
        ap.error("--duration, --rounds, --conns and --threads must be positive")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    set_subreaper()
    tmp = tempfile.mkdtemp(prefix="rwbench.")
    try:
        nginx = ensure_system_tools()
        venv = os.environ.get("BENCH_VENV") or os.path.join(HERE, ".venv")
        py = ensure_venv(venv)
        rw = ensure_rustworkers(os.environ.get("RW_BIN"))
        ctx = Ctx(args, tmp, py, rw, nginx)
        load = Load(args, tmp, py)
        v = versions(py, rw, nginx)
        env_note = " ".join(f"{k}={os.environ[k]}" for k in ("RW_BIN", "BENCH_VENV") if os.environ.get(k))
        cmd = " ".join(shlex.quote(a) for a in ["python3", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                       + sys.argv[1:])
        header = [
            f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
            f"- machine: {machine_info()}; the client, the servers and their workers share these CPUs over loopback",
            f"- command: `{cmd}`" + (f" (environment: `{env_note}`)" if env_note else ""),
            f"- rustworkers {v.get('rustworkers')}; shim: the `workers/` checkout beside the binary",
            f"- Python {v.get('python')} (venv `{os.path.relpath(venv, ROOT) if venv.startswith(ROOT) else venv}`); "
            + ", ".join(f"{k} {v.get(k)}" for k in ("gunicorn", "uvicorn", "granian", "uhttp-workers", "uhttp-server",
                                                     "fastapi", "starlette", "pydantic", "uvloop", "httptools",
                                                     "websockets"))
            + f"; nginx {v.get('nginx')}; wrk {v.get('wrk')}",
        ]
        os.makedirs(RESULTS, exist_ok=True)
        texts = []
        for name in suites:
            log(f"suite {name}")
            text = run_respawn(ctx, header) if name == "respawn" else run_suite(name, ctx, load, header)
            print(text, flush=True)
            texts.append(text)
        log(f"results in {os.path.relpath(RESULTS, os.getcwd())}/: " + ", ".join(f"{s}.md" for s in suites))
        return 0
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
