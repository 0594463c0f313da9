"""The hello-JSON app as a plain ASGI 3 app, no framework (uvicorn, granian --interface asgi,
rustworkers `asgi =`): GET /api/hello, POST /api/echo (the request body back), GET /api/pid,
and a WebSocket echo at /ws (every text or bytes message is sent straight back)."""

import json
import os

_HELLO = json.dumps({"hello": "world"}).encode()
_JSON = [(b"content-type", b"application/json")]
_OCTET = [(b"content-type", b"application/octet-stream")]


async def _send(send, status, headers, body):
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive):
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def _websocket(receive, send):
    while True:
        msg = await receive()
        t = msg["type"]
        if t == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif t == "websocket.receive":
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg.get("bytes") or b""})
        else:  # websocket.disconnect
            return


async def _lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path == "/api/hello":
            await _send(send, 200, _JSON, _HELLO)
        elif path == "/api/echo":
            await _send(send, 200, _OCTET, await _read_body(receive))
        elif path == "/api/pid":
            await _send(send, 200, _JSON, json.dumps({"pid": os.getpid()}).encode())
        else:
            await _send(send, 404, [(b"content-type", b"text/plain")], b"not found")
    elif kind == "websocket":
        if scope["path"] == "/ws":
            await _websocket(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})
    elif kind == "lifespan":
        await _lifespan(receive, send)
