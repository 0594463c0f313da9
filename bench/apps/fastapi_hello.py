"""The hello-JSON app in FastAPI (uvicorn, granian --interface asgi, rustworkers `asgi =`):
the same routes as asgi_hello.py, written the idiomatic FastAPI way."""

import os

from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/api/hello")
async def hello():
    return {"hello": "world"}


@app.post("/api/echo")
async def echo(request: Request):
    return Response(await request.body(), media_type="application/octet-stream")


@app.get("/api/pid")
async def pid():
    return {"pid": os.getpid()}


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
