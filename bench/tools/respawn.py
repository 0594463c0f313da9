"""Time from SIGKILL of a worker to its replacement answering 200.

    python respawn.py URL [--status URL --pool NAME] [--runs 10]

URL must answer JSON with a "pid" field: the pid of the worker that served it (the
rustworkers echo worker, or the bench apps' /api/pid). The server must run ONE worker
for that URL, so the pid it answers is the one to kill. With --status/--pool (rustworkers)
the pid is also read from /status and must match. Each run: GET URL (the worker has
served, so no restart backoff applies), SIGKILL it, then GET URL every 1 ms until a 200
comes from a different pid. Prints one JSON line: runs in ms, median, and the non-200
statuses seen while waiting.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import time
import urllib.parse


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.path = u.path + (("?" + u.query) if u.query else "")
        self.conn = None

    def get(self, path=None):
        """(status, parsed JSON or None); (0, None) on a connection error."""
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                self.conn.request("GET", path or self.path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.close()
        return 0, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def status_pids(status_url, pool):
    c = Client(status_url)
    code, data = c.get()
    c.close()
    if code != 200 or not isinstance(data, dict):
        return []
    for p in data.get("pools", []):
        if p.get("name") == pool:
            return [w["pid"] for w in p.get("workers", []) if w.get("alive") and w.get("pid", 0) > 0]
    return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--status")
    ap.add_argument("--pool")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--give-up", type=float, default=30.0, help="seconds per run")
    args = ap.parse_args()

    client = Client(args.url)
    runs, seen = [], {}
    for _ in range(args.runs):
        # Wait for a worker that answers (the previous replacement may still be starting).
        deadline = time.monotonic() + args.give_up
        while True:
            code, data = client.get()
            if code == 200 and isinstance(data, dict) and data.get("pid"):
                break
            if time.monotonic() > deadline:
                print(json.dumps({"error": "no worker answered", "runs_ms": [round(r, 1) for r in runs]}))
                return 1
            time.sleep(0.01)
        old = int(data["pid"])
        if args.status:
            pids = status_pids(args.status, args.pool)
            if pids != [old]:
                print(json.dumps({"error": f"/status pids {pids} != answering pid {old}"}))
                return 1
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        while True:
            code, data = client.get()
            if code == 200 and isinstance(data, dict) and data.get("pid") and int(data["pid"]) != old:
                runs.append((time.perf_counter() - t0) * 1000.0)
                break
            if code != 200:
                seen[str(code)] = seen.get(str(code), 0) + 1
            if time.perf_counter() - t0 > args.give_up:
                print(json.dumps({"error": f"no replacement answered within {args.give_up:.0f} s (run {len(runs) + 1})", "runs_ms": [round(r, 1) for r in runs]}))
                return 1
            time.sleep(0.001)
        time.sleep(0.05)
    client.close()
    print(json.dumps({
        "runs_ms": [round(r, 1) for r in runs],
        "median_ms": round(statistics.median(runs), 1),
        "min_ms": round(min(runs), 1),
        "max_ms": round(max(runs), 1),
        "statuses_while_waiting": seen,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
