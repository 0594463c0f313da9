"""Command line: `python -m rustworkers worker pkg.mod:Class` or `... wsgi pkg.mod:app`.

Started by the dispatcher with fds 3 (requests) and 4 (replies); see docs/python.md.
"""

import sys

from .runner import load_target, run


def _make_class_worker(target):
    def make(cfg):
        cls = load_target(target)
        return cls(int(cfg.get("worker_id", 0)), None, None, None,
                   heartbeat_interval=cfg.get("heartbeat_interval", 1),
                   log_level=cfg.get("log_level", "warning"),
                   pool_name=cfg.get("pool"), **(cfg.get("kwargs") or {}))
    return make


def _make_wsgi_worker(target):
    def make(cfg):
        from .wsgi import WsgiWorker
        app = load_target(target)
        return WsgiWorker(int(cfg.get("worker_id", 0)), None, None, None,
                          heartbeat_interval=cfg.get("heartbeat_interval", 1),
                          log_level=cfg.get("log_level", "warning"),
                          pool_name=cfg.get("pool"), app=app,
                          **(cfg.get("kwargs") or {}))
    return make


USAGE = "usage: python -m rustworkers {worker pkg.mod:Class | wsgi pkg.mod:app}\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("worker", "wsgi"):
        sys.stderr.write(USAGE)
        return 2
    kind, target = argv
    make = _make_class_worker(target) if kind == "worker" else _make_wsgi_worker(target)
    return run(make, label=target)


if __name__ == "__main__":
    sys.exit(main())
