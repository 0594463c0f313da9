"""Items API example for the rustworkers Python shim (uhttp-workers quick-start style).

Served by the `items` pool of examples/config.toml:
    [[pool]]
    name = "items"
    routes = ["/api/**"]
    python = "examples.items_worker:ItemsWorker"
    module_path = [".."]
"""

import time

from rustworkers import DEFERRED, ApiHandler, RejectRequest, Worker, api


class ApiHandlerStatus(ApiHandler):
    """A grouped route set: everything here lives under /api/status."""

    PATTERN = "/api/status"

    @api("", "GET")
    def status(self, request):
        return {"items": len(self.worker.items), "worker_id": self.worker.worker_id}


class ItemsWorker(Worker):
    HANDLERS = [ApiHandlerStatus]
    LOG_NAME = "items[{worker_id}]"

    def setup(self):
        self.items = {}
        self.next_id = 1
        self.waiting = []  # deferred requests answered from on_idle / the next POST

    def do_check(self, request):
        # Example guard: writes need a JSON body.
        if request.method == "POST" and request.path.startswith("/api/items"):
            if not isinstance(request.data, dict):
                raise RejectRequest({"error": "JSON object required"}, 400)
        return None

    @api("/api/hello", "GET")
    def hello(self, request):
        return {"hello": "world"}

    @api("/api/items", "GET")
    def list_items(self, request):
        return list(self.items.values())

    @api("/api/items/{id:int}", "GET")
    def get_item(self, request):
        item = self.items.get(request.path_params["id"])
        if item is None:
            return {"error": "Not found"}, 404
        return item

    @api("/api/items", "POST")
    def create_item(self, request):
        item = dict(request.data, id=self.next_id)
        self.items[self.next_id] = item
        self.next_id += 1
        for _since, waiter in self.waiting:
            waiter.respond({"created": item})
        self.waiting = []
        return item, 201

    @api("/api/items/{id:int}", "DELETE")
    def delete_item(self, request):
        if self.items.pop(request.path_params["id"], None) is None:
            return {"error": "Not found"}, 404
        return None, 204

    @api("/api/items/events", "GET")
    def events(self, request):
        """SSE: ?count=N events, one per item snapshot, then the stream ends."""
        count = int((request.query or {}).get("count") or 3)
        request.response_stream()
        for i in range(count):
            request.send_event({"n": i, "items": len(self.items)}, event="tick", event_id=i)
        request.response_stream_end()
        return DEFERRED

    @api("/api/items/next", "GET")
    def next_item(self, request):
        """Deferred: answered by the next POST /api/items, or 'timeout' from on_idle."""
        self.waiting.append((time.monotonic(), request))
        return DEFERRED

    def on_idle(self):
        now = time.monotonic()
        expired = [entry for entry in self.waiting if now - entry[0] > 5]
        for entry in expired:
            entry[1].respond({"created": None}, 200)
            self.waiting.remove(entry)

    @api("/api/slow", "GET")
    def slow(self, request):
        seconds = float((request.query or {}).get("seconds") or 1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            self.keep_alive()  # tell the dispatcher we are alive, restart the timeout
        return {"slept": seconds}
