import os
import io
import unittest
from wsgiref.validate import validator

from rustworkers.wsgi import WsgiWorker, build_environ


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (part for part in [b"a", b"", b"b"])
    if path == "/write":
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/post":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE", ""))])
        return [body]
    if path == "/exc":
        try:
            raise ValueError("x")
        except ValueError:
            import sys
            start_response("200 OK", [("Content-Type", "text/plain")])
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/log":
        environ["wsgi.errors"].write("to the log\n")
    keys = ("QUERY_STRING", "HTTP_COOKIE", "HTTP_X_A", "SERVER_NAME", "SERVER_PORT",
            "REMOTE_ADDR", "REMOTE_PORT", "SERVER_PROTOCOL", "PATH_INFO", "SCRIPT_NAME")
    body = "\n".join("%s=%s" % (k, environ.get(k)) for k in keys).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1")])
    return [body]


class Closing:
    closed = False

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def close(self):
        Closing.closed = True


def meta(method="GET", path="/", query=None, headers=(), **extra):
    m = {"method": method, "path": path, "query": query, "headers": [list(h) for h in headers],
         "remote_addr": "10.0.0.2", "remote_port": 5555, "http_version": "1.1"}
    m.update(extra)
    return m


class WsgiTest(unittest.TestCase):
    def setUp(self):
        self.logs = []
        self.w = WsgiWorker(0, None, None, None, app=validator(app))
        self.w.log.sink = lambda lv, n, m: self.logs.append((lv, m))

    def call(self, *args, body=b"", **kw):
        return self.w.handle_wsgi(meta(*args, **kw), body)

    def test_get_query_headers_cookies(self):
        status, headers, body = self.call("GET", "/caf%C3%A9", "a=1&b=2", headers=[
            ("host", "example.com:8080"), ("x-a", "1"), ("x-a", "2"), ("cookie", "s=1"),
            ("cookie", "t=2"), ("x_spoof", "no")])
        self.assertEqual(status, 200)
        self.assertIn(["Set-Cookie", "a=1"], headers)
        env = dict(line.split("=", 1) for line in body.decode("latin-1").split("\n"))
        self.assertEqual(env["QUERY_STRING"], "a=1&b=2")
        self.assertEqual(env["HTTP_COOKIE"], "s=1; t=2")
        self.assertEqual(env["HTTP_X_A"], "1,2")
        self.assertEqual((env["SERVER_NAME"], env["SERVER_PORT"]), ("example.com", "8080"))
        self.assertEqual((env["REMOTE_ADDR"], env["REMOTE_PORT"]), ("10.0.0.2", "5555"))
        self.assertEqual(env["SERVER_PROTOCOL"], "HTTP/1.1")
        self.assertEqual(env["PATH_INFO"], "/caf\xc3\xa9")  # latin-1 native string
        self.assertEqual(env["SCRIPT_NAME"], "")

    def test_environ_basics(self):
        env = build_environ(meta(headers=[("x_a", "1"), ("content-length", "3")]), b"abc",
                            io.StringIO())
        self.assertEqual((env["CONTENT_LENGTH"], env["SERVER_NAME"], env["SERVER_PORT"]),
                         ("3", "localhost", "80"))
        self.assertNotIn("HTTP_X_A", env)
        self.assertEqual(env["wsgi.version"], (1, 0))
        self.assertTrue(env["wsgi.multiprocess"] and env["wsgi.input_terminated"])
        self.assertFalse(env["wsgi.multithread"] or env["wsgi.run_once"])
        self.assertEqual(build_environ(meta(headers=[("host", "[::1]:99")]), b"",
                                       io.StringIO())["SERVER_NAME"], "[::1]")

    def test_post_body(self):
        status, headers, body = self.call("POST", "/post", body=b'{"a":1}',
                                          headers=[("content-type", "application/json")])
        self.assertEqual((status, body), (200, b'{"a":1}'))
        self.assertIn(["Content-Type", "application/json"], headers)

    def test_generator_and_write(self):
        self.assertEqual(self.call("GET", "/gen")[2], b"ab")
        status, _, body = self.call("GET", "/write")
        self.assertEqual((status, body), (201, b"written;returned"))

    def test_exc_info_replaces_status(self):
        w = WsgiWorker(0, None, None, None, app=app)
        status, _, body = w.handle_wsgi(meta(path="/exc"), b"")
        self.assertEqual((status, body), (500, b"replaced"))

    def test_exception_is_500_and_logged(self):
        status, _, body = self.call("GET", "/boom")
        self.assertEqual(status, 500)
        self.assertTrue(any("RuntimeError: boom" in m for _, m in self.logs))
        self.assertEqual(self.call("GET", "/gen")[0], 200)  # the worker lives on

    def test_close_called_and_errors_stream(self):
        w = WsgiWorker(0, None, None, None,
                       app=lambda e, s: (s("200 OK", []), Closing([b"x"]))[1])
        self.assertEqual(w.handle_wsgi(meta(), b"")[2], b"x")
        self.assertTrue(Closing.closed)
        self.call("GET", "/log")
        self.assertIn((40, "to the log"), self.logs)


if __name__ == "__main__":
    unittest.main()


class ScriptNameTests(unittest.TestCase):
    """SCRIPT_NAME in the environment mounts the app under a prefix (gunicorn's rule)."""

    def _environ(self, path, script_name):
        from rustworkers.wsgi import build_environ
        old = os.environ.get("SCRIPT_NAME")
        os.environ["SCRIPT_NAME"] = script_name
        try:
            return build_environ({"method": "GET", "path": path, "headers": []}, b"", None)
        finally:
            if old is None:
                del os.environ["SCRIPT_NAME"]
            else:
                os.environ["SCRIPT_NAME"] = old

    def test_prefix_moves_to_script_name(self):
        env = self._environ("/flask/hello", "/flask")
        self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("/flask", "/hello"))

    def test_other_paths_untouched(self):
        env = self._environ("/flaskish", "/flask")
        self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("", "/flaskish"))
