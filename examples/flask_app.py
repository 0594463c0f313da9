"""A small Flask app served by rustworkers through the shim's WSGI adapter.

Served by the `flask` pool of examples/config.toml (`wsgi = "examples.flask_app:app"`,
mounted at /flask with SCRIPT_NAME); needs `pip install flask`.
"""

from flask import Flask, abort, jsonify, make_response, request

app = Flask(__name__)


@app.get("/")
def index():
    return "<h1>rustworkers + Flask</h1>"


@app.get("/hello")
def hello():
    return jsonify(hello=request.args.get("name", "world"))


@app.post("/echo")
def echo():
    return jsonify(request.get_json(force=True, silent=False))


@app.post("/form")
def form():
    return jsonify(dict(request.form))


@app.get("/cookies")
def cookies():
    resp = make_response(jsonify(dict(request.cookies)))
    resp.set_cookie("visited", "yes")
    return resp


@app.get("/headers")
def headers():
    return jsonify({k.lower(): v for k, v in request.headers.items()})


@app.get("/boom")
def boom():
    raise RuntimeError("boom")


@app.get("/missing")
def missing():
    abort(404)
