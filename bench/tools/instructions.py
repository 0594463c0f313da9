#!/usr/bin/env python3
"""Instructions the dispatcher executes per pool request, under valgrind's callgrind
(user space only; repeatable whatever else the machine does, unlike CPU time).

    python3 bench/tools/instructions.py [--bin target/release/rustworkers] [-n 10000]

Runs the dispatcher twice under callgrind with a 2-worker `python =` pool (bench/apps
hello_worker, one event loop), drives 2000 and then 2000 + N keep-alive requests for
GET /api/hello over 8 connections, and prints (total(2000 + N) - total(2000)) / N: the
marginal count per request, start-up and shutdown cancelled out. Needs valgrind.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUEST = b"GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(port, n, conns=8):
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    bufs = [b""] * conns
    done = 0
    try:
        while done < n:
            for s in socks:
                s.sendall(REQUEST)
            for i, s in enumerate(socks):
                while True:
                    end = bufs[i].find(b"\r\n\r\n")
                    if end >= 0:
                        m = re.search(rb"(?i)content-length:\s*(\d+)", bufs[i][:end])
                        total = end + 4 + int(m.group(1))
                        if len(bufs[i]) >= total:
                            if not bufs[i].startswith(b"HTTP/1.1 200"):
                                raise SystemExit("unexpected answer: %r" % bufs[i][:80])
                            bufs[i] = bufs[i][total:]
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SystemExit("the server closed a connection")
                    bufs[i] += chunk
                done += 1
    finally:
        for s in socks:
            s.close()


def run(binary, n, tmp, python):
    port = free_port()
    cfg = os.path.join(tmp, "rw.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nbind = ["127.0.0.1:{port}"]\naccess_log = "off"\nthreads = 1\n\n'
                f'[[pool]]\nname = "app"\nroutes = ["/api/**"]\npython = "hello_worker:HelloWorker"\n'
                f'num_workers = 2\ninterpreter = "{python}"\nmodule_path = ["{ROOT}/bench/apps"]\n')
    out = os.path.join(tmp, "callgrind.%d.out" % n)
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "-c", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                drive(port, 1)
                break
            except (OSError, SystemExit):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not answer under valgrind")
                time.sleep(0.2)
        drive(port, n - 1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    text = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text)
    if not m:
        raise SystemExit("no totals in callgrind's output")
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rustworkers"))
    ap.add_argument("-n", type=int, default=10000, help="requests measured (default 10000)")
    ap.add_argument("--python", default=sys.executable, help="the workers' interpreter")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = run(args.bin, 2000, tmp, args.python)
        more = run(args.bin, 2000 + args.n, tmp, args.python)
    print("%s: %.0f instructions per pool request (%d requests; %d and %d in all)"
          % (args.bin, (more - base) / args.n, args.n, base, more))


if __name__ == "__main__":
    main()
