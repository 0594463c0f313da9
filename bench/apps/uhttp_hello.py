"""The same hello-JSON worker under uhttp-workers 1.8.1 (Dispatcher + WorkerPool, 2 workers by default).

    python uhttp_hello.py PORT [WORKERS [MAX_RESTARTS [MAX_CLIENTS]]]

MAX_CLIENTS is uhttp-server's `max_waiting_clients` (its default, 32, answers the oldest
connection 408 "Request Timeout, too many requests" whenever a 33rd one arrives).
"""

import os
import sys

import uhttp.workers as _workers


class HelloWorker(_workers.Worker):
    @_workers.api("/api/hello", "GET")
    def hello(self, request):
        return {"hello": "world"}

    @_workers.api("/api/pid", "GET")
    def pid(self, request):
        return {"pid": os.getpid()}


def main():
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    max_restarts = int(sys.argv[3]) if len(sys.argv) > 3 else 10  # upstream default
    extra = {"max_waiting_clients": int(sys.argv[4])} if len(sys.argv) > 4 else {}
    dispatcher = _workers.Dispatcher(
        port=port,
        address="127.0.0.1",
        pools=[_workers.WorkerPool(HelloWorker, num_workers=workers, routes=["/api/**"], max_restarts=max_restarts)],
        log_level=_workers.LOG_WARNING,
        **extra,
    )
    dispatcher.run()


if __name__ == "__main__":
    main()
