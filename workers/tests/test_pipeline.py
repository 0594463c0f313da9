import io
import os
import pickle
import unittest
from contextlib import redirect_stderr

import rustworkers as rw
from rustworkers import (DEFERRED, LOG_DEBUG, LOG_ERROR, LOG_INFO, Logger, RejectRequest,
                         Request, Response, Worker, api)


class Forms(Worker):
    @api("/dict")
    def d(self, r):
        return {"a": 1}

    @api("/list")
    def l(self, r):
        return [1, 2]

    @api("/two")
    def two(self, r):
        return "x", 201

    @api("/three")
    def three(self, r):
        return b"x", 202, {"X-A": "1"}

    @api("/one")
    def one(self, r):
        return ("only",)

    @api("/none")
    def none(self, r):
        return None

    @api("/resp")
    def resp(self, r):
        return Response(None, "r", 203, cookies={"a": "b"})

    @api("/deferred")
    def deferred(self, r):
        return DEFERRED

    @api("/reject")
    def reject(self, r):
        raise RejectRequest()

    @api("/reject418")
    def reject418(self, r):
        raise RejectRequest({"e": 1}, 418)

    @api("/boom")
    def boom(self, r):
        raise KeyError("k")

    @api("/exit")
    def exit(self, r):
        raise SystemExit(7)


def make(cls=Forms, **kw):
    w = cls(0, None, None, None, **kw)
    w.log.sink = lambda *a: None
    w._build_routes()
    return w


def handle(w, path, method="GET"):
    return w._handle_request(Request(5, method, path))


class ReturnFormsTest(unittest.TestCase):
    def test_forms(self):
        w = make()
        r = handle(w, "/dict")
        self.assertEqual((r.request_id, r.data, r.status, r.headers), (5, {"a": 1}, 200, None))
        self.assertEqual(handle(w, "/list").data, [1, 2])
        self.assertEqual((handle(w, "/two").data, handle(w, "/two").status), ("x", 201))
        r = handle(w, "/three")
        self.assertEqual((r.data, r.status, r.headers), (b"x", 202, {"X-A": "1"}))
        r = handle(w, "/none")
        self.assertEqual((r.data, r.status), (None, 200))
        r = handle(w, "/resp")
        self.assertEqual((r.request_id, r.status, r.cookies), (5, 203, {"a": "b"}))
        self.assertIsNone(handle(w, "/deferred"))

    def test_bad_tuple_goes_to_on_request_error(self):
        r = handle(make(), "/one")
        self.assertEqual(r.status, 500)
        self.assertIn("values to unpack", r.data["error"])

    def test_reject(self):
        r = handle(make(), "/reject")
        self.assertEqual((r.data, r.status, r.headers), ({"error": "Rejected"}, 403, None))
        r = handle(make(), "/reject418")
        self.assertEqual((r.data, r.status), ({"e": 1}, 418))
        err = RejectRequest()
        self.assertEqual((err.args, str(err)), ((), ""))
        self.assertTrue(issubclass(RejectRequest, rw.ApiException))

    def test_default_on_request_error_sends_message(self):  # QUIRK 3 kept
        r = handle(make(), "/boom")
        self.assertEqual((r.status, r.data), (500, {"error": "'k'"}))

    def test_system_exit_escapes(self):
        with self.assertRaises(SystemExit):
            handle(make(), "/exit")

    def test_on_request_error_variants(self):
        class NoneErr(Forms):
            def on_request_error(self, request, err):
                return None

        class WeirdErr(Forms):
            def on_request_error(self, request, err):
                return {"not": "a response"}

        class CustomErr(Forms):
            def on_request_error(self, request, err):
                return Response(None, {"custom": type(err).__name__}, 502)

        self.assertIsNone(handle(make(NoneErr), "/boom"))
        self.assertEqual(handle(make(WeirdErr), "/boom").status, 500)  # QUIRK 11
        r = handle(make(CustomErr), "/boom")
        self.assertEqual((r.request_id, r.status, r.data), (5, 502, {"custom": "KeyError"}))


class DoCheckTest(unittest.TestCase):
    def test_variants(self):
        seen = []

        class Checked(Forms):
            def do_check(self, request):
                seen.append(dict(request.path_params))
                if request.path == "/dict":
                    return None
                if request.path == "/list":
                    return {"denied": True}, 401
                if request.path == "/two":
                    raise RejectRequest({"no": 1}, 451)
                if request.path == "/three":
                    return "not a pair"
                raise ValueError("secret")

            def on_request_error(self, request, err):
                raise AssertionError("must not be called for do_check")

        w = make(Checked)
        self.assertEqual(handle(w, "/dict").status, 200)
        r = handle(w, "/list")
        self.assertEqual((r.data, r.status, r.headers), ({"denied": True}, 401, None))
        self.assertEqual(handle(w, "/two").status, 451)
        r = handle(w, "/three")
        self.assertEqual((r.status, r.data), (500, {"error": "Internal server error"}))
        r = handle(w, "/nowhere")  # runs before routing, also for 404s
        self.assertEqual((r.status, r.data), (500, {"error": "Internal server error"}))
        self.assertEqual(seen, [{}] * 5)


class RequestResponseTest(unittest.TestCase):
    def test_defaults(self):
        r = Request(1, "GET", "/")
        self.assertEqual((r.query, r.data, r.headers, r.content_type, r.path_params,
                          r.remote_address, r.context, r.cookies),
                         (None, None, {}, None, {}, None, None, {}))
        r.respond({"ignored": True})  # unbound: no-op
        r.send_event("x")
        r.response_stream_end()

    def test_cookies(self):
        r = Request(1, "GET", "/", headers={"cookie": "a=1; b = x=y ;noeq; =v; a=2; c="})
        self.assertEqual(r.cookies, {"a": "2", "b": "x=y", "c": ""})
        self.assertIs(r.cookies, r.cookies)

    def test_pickle(self):
        big = os.urandom(1 << 20)
        r = Request(7, "POST", "/p", {"q": ["1", "2"]}, big, {"h": "v"}, "application/x",
                    "::ffff:10.0.0.1", {"user": "u"})
        r.path_params = {"id": 3}
        r._worker = object()  # a live binding is not pickled
        c = pickle.loads(pickle.dumps(r))
        for attr in ("request_id", "method", "path", "query", "data", "headers",
                     "content_type", "path_params", "remote_address", "context"):
            self.assertEqual(getattr(c, attr), getattr(r, attr), attr)
        self.assertIsNone(c._worker)
        resp = pickle.loads(pickle.dumps(Response(1, big, 201, {"a": "b"}, {"c": None})))
        self.assertEqual((resp.request_id, resp.data, resp.status, resp.headers, resp.cookies),
                         (1, big, 201, {"a": "b"}, {"c": None}))
        self.assertIs(pickle.loads(pickle.dumps(DEFERRED)), DEFERRED)


class LoggerTest(unittest.TestCase):
    def capture(self, level=LOG_DEBUG):
        out = []
        return Logger("n", None, level, sink=lambda lv, name, msg: out.append((lv, name, msg))), out

    def test_formatting(self):
        log, out = self.capture()
        log.info("%s {x}", 5, x=2)
        log.info("100% {literal}")
        log.info("%d", "x")
        log.info("%(a)s", {"a": 1})
        log.info("{a}", a=1)
        obj = object()
        log.info(obj)
        self.assertEqual([m for _, _, m in out],
                         ["5 2", "100% {literal}", "%d ('x',) {}", "%(a)s ({'a': 1},) {}",
                          "1", obj])

    def test_levels(self):
        log, out = self.capture(LOG_ERROR)
        log.warning("no")
        log.error("yes")
        log.critical("yes")
        self.assertEqual([lv for lv, _, _ in out], [40, 50])
        self.assertFalse(log.is_warning)
        self.assertTrue(log.is_error)
        log.level = LOG_INFO
        self.assertTrue(log.is_info and not log.is_debug)
        self.assertEqual(rw.LOG_LEVEL_NAMES[30], "WARNING")

    def test_unattached_never_raises(self):
        buf = io.StringIO()
        with redirect_stderr(buf):
            Logger("x", "a queue").error("oops %s", 1)
            Logger("y", sink=lambda *a: 1 / 0).error("still fine")
        self.assertIn("ERROR x oops 1", buf.getvalue())
        self.assertIn("ERROR y still fine", buf.getvalue())


class WorkerBasicsTest(unittest.TestCase):
    def test_constructor_and_log_name(self):
        w = Worker(2, None, None, None, heartbeat_interval=5, log_level=LOG_INFO,
                   pool_name="p", worker_memory_limit_mb=0, extra=1)
        self.assertEqual((w.worker_id, w.pool_name, w.kwargs, w.log.name, w.log.level),
                         (2, "p", {"worker_memory_limit_mb": 0, "extra": 1}, "Worker[2]", 20))
        self.assertTrue(w._accepting)
        self.assertEqual(w._format_log_name(), "Worker[2]")
        w.LOG_NAME = "{pool_name}-{worker_id}-{pid}"
        self.assertEqual(w._format_log_name(), "p-2-%d" % os.getpid())
        msgs = []
        w.log.sink = lambda lv, n, m: msgs.append(m)
        w.LOG_NAME = "{nope}"
        self.assertEqual(w._format_log_name(), "Worker[2]")
        self.assertEqual(len(msgs), 1)
        self.assertIn("invalid LOG_NAME", msgs[0])

    def test_unstarted_control_calls_are_safe(self):
        w = Worker(0, None, None, None)
        w.log.sink = lambda *a: None
        w.keep_alive()
        w.pause()
        self.assertFalse(w._accepting)
        w.resume()
        self.assertTrue(w._accepting)
        w.forward("/x", {"a": 1})
        w.register_reader(0, print)
        w.unregister_reader(0)


if __name__ == "__main__":
    unittest.main()
