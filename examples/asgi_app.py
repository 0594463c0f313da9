"""A FastAPI app served by rustworkers' ASGI adapter.

    [[pool]]
    name = "asgi"
    routes = ["/asgi/**"]
    command = ["python3", "-m", "rustworkers", "asgi", "asgi_app:app"]
    env = { PYTHONPATH = "/path/to/rustworkers/workers:/path/to/rustworkers/examples",
            SCRIPT_NAME = "/asgi" }
    [pool.kwargs]
    concurrency = 100

GET /asgi/hello, GET /asgi/items/3?q=x, POST /asgi/echo, GET /asgi/events (SSE).
"""

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


@asynccontextmanager
async def lifespan(app):
    # Runs once per worker before it takes requests; what it yields is request.state.
    yield {"visits": {"count": 0}}


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
async def hello(request: Request):
    request.state.visits["count"] += 1
    return {"hello": "world", "visits_in_this_worker": request.state.visits["count"]}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/echo")
async def echo(request: Request):
    return {"received": (await request.body()).decode("utf-8", "replace")}


@app.get("/events")
async def events(count: int = 5):
    async def gen():
        for i in range(count):
            yield "event: tick\ndata: %d\n\n" % i
            await asyncio.sleep(0.5)
    return StreamingResponse(gen(), media_type="text/event-stream")
