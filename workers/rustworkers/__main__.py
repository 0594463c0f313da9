"""Command line (docs/python.md), started by the dispatcher with fds 3 (requests) and
4 (replies):

    python -m rustworkers worker pkg.mod:Class
    python -m rustworkers wsgi   pkg.mod:app     [--factory]
    python -m rustworkers asgi   pkg.mod:app     [--factory]
    python -m rustworkers forkserver {worker|wsgi|asgi} TARGET [--factory]

`--factory`: the target is a callable taking no arguments that returns the app.
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


def _make_wsgi_worker(target, factory):
    def make(cfg):
        from .wsgi import WsgiWorker
        app = load_target(target)
        if factory:
            app = app()
        return WsgiWorker(int(cfg.get("worker_id", 0)), None, None, None,
                          heartbeat_interval=cfg.get("heartbeat_interval", 1),
                          log_level=cfg.get("log_level", "warning"),
                          pool_name=cfg.get("pool"), app=app,
                          **(cfg.get("kwargs") or {}))
    return make


USAGE = ("usage: python -m rustworkers {worker pkg.mod:Class | wsgi pkg.mod:app [--factory]"
         " | asgi pkg.mod:app [--factory]}\n")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["forkserver"]:
        from .forkserver import serve
        return serve(argv[1:])
    factory = "--factory" in argv
    if factory:
        argv.remove("--factory")
    if len(argv) != 2 or argv[0] not in ("worker", "wsgi", "asgi") or (
            factory and argv[0] == "worker"):
        sys.stderr.write(USAGE)
        return 2
    kind, target = argv
    if kind == "asgi":
        from .asgi import run_asgi
        return run_asgi(target, factory=factory)
    make = _make_class_worker(target) if kind == "worker" else _make_wsgi_worker(target, factory)
    return run(make, label=target)


if __name__ == "__main__":
    sys.exit(main())
