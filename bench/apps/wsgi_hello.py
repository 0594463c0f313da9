"""The same hello-JSON handler as a plain WSGI app (gunicorn, granian and rustworkers `wsgi =`):
GET /api/hello, GET /api/items/<int>, POST /api/echo (the request body back), GET /api/pid."""

import json
import os

_HELLO = json.dumps({"hello": "world"}).encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/api/hello":
        body = _HELLO
    elif path == "/api/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n > 0 else b""
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    elif path.startswith("/api/items/") and path[11:].isdigit():
        item_id = int(path[11:])
        body = json.dumps({"id": item_id, "name": "item %d" % item_id}).encode()
    elif path == "/api/pid":
        body = json.dumps({"pid": os.getpid()}).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
