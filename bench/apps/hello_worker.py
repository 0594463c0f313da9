"""Hello-JSON worker for the rustworkers `python =` pool (the hello route of
examples/items_worker.py), GET /api/items/<int> (a path parameter), POST /api/echo (the
request body back, as bytes), plus /api/pid
for the respawn-time measurement."""

import os

from rustworkers import Worker, api


class HelloWorker(Worker):
    @api("/api/hello", "GET")
    def hello(self, request):
        return {"hello": "world"}

    @api("/api/echo", "POST")
    def echo(self, request):
        # A raw body (not form, not JSON) arrives as bytes; bytes go back as octet-stream.
        return request.data or b""

    @api("/api/items/{item_id:int}", "GET")
    def item(self, request):
        # A path parameter, converted: the route table's cost for a parameterised route.
        item_id = request.path_params["item_id"]
        return {"id": item_id, "name": "item %d" % item_id}

    @api("/api/pid", "GET")
    def pid(self, request):
        return {"pid": os.getpid()}
