"""Hello-JSON worker for the rustworkers `python =` pool (the hello route of
examples/items_worker.py), plus /api/pid for the respawn-time measurement."""

import os

from rustworkers import Worker, api


class HelloWorker(Worker):
    @api("/api/hello", "GET")
    def hello(self, request):
        return {"hello": "world"}

    @api("/api/pid", "GET")
    def pid(self, request):
        return {"pid": os.getpid()}
